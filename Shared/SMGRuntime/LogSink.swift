public import Logging
import Foundation
import SMGCore

/// Structured log lines on stderr, one JSON object per line:
/// `{"time":"…","level":"info","process":"smg-scanner@host:42","site":"eu-de-01","msg":"…","msgid":"01J…",…}`.
/// Message-related lines carry the message id in `msgid` (set as logger metadata by the stage runner).
/// A process supervisor (systemd's journal, supervisord) collects stderr; nothing writes files.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let label: String
    let fixed: [String: String]

    public init(label: String, level: Logger.Level, fixed: [String: String]) {
        self.label = label
        self.logLevel = level
        self.fixed = fixed
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object: [String: JSONValue] = [:]
        for (k, v) in fixed { object[k] = .string(v) }
        for (k, v) in metadata { object[k] = Self.json(v) }
        if let extra = event.metadata { for (k, v) in extra { object[k] = Self.json(v) } }
        object["time"] = .string(Timestamp.format(Date()))
        object["level"] = .string(event.level.rawValue)
        object["msg"] = .string(event.message.description)
        if event.level >= .error { object["source"] = .string("\(event.file):\(event.line)") }
        var data = (try? Self.encoder.encode(JSONValue.object(object))) ?? Data()
        data.append(0x0A)
        Self.write(data)
    }

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let s): .string(s)
        case .stringConvertible(let c): .string(c.description)
        case .array(let a): .array(a.map(json))
        case .dictionary(let d): .object(d.mapValues(json))
        }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    private static let lock = NSLock()
    static func write(_ data: Data) {
        lock.lock()
        defer { lock.unlock() }
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { break }
                offset += n
            }
        }
    }
}

public enum LogSetup {
    /// Bootstraps swift-log once per process with JSON lines on stderr.
    public static func bootstrap(process: String, site: String, level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            JSONLogHandler(label: label, level: level, fixed: ["process": process, "site": site])
        }
    }
}
