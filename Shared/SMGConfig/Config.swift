public import Foundation
import Yams

/// A configuration error, always naming the key (and where its value came from).
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var key: String
    public var source: String
    public var problem: String
    /// Passwords inside URLs never appear (see `Config.redact`).
    public var description: String { "config error: \(key) (\(source)): \(Config.redact(problem))" }

    public init(key: String, source: String, problem: String) {
        self.key = key
        self.source = source
        self.problem = problem
    }
}

/// Why a configuration value was refused (becomes the `problem` of a `ConfigError`).
public struct ConfigProblem: Error, Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public var description: String
    public init(stringLiteral value: String) { description = value }
    public init(_ text: String) { description = text }
}

/// One documented configuration key: name, default, bounds and meaning, in one place
/// (printable with `--print-config`, like `postconf -d`).
public struct ConfigKey<Value: Sendable>: Sendable {
    public let name: String
    public let defaultText: String
    public let help: String
    public let kind: String
    /// The value is a secret (a password, a key): it is shown as `***` in logs,
    /// `--check-config` output and error messages. (Passwords inside URLs are redacted for
    /// every key anyway, see `Config.redact`.)
    public let isSecret: Bool
    let parse: @Sendable (String) -> Result<Value, ConfigProblem>

    public init(_ name: String, default defaultText: String, kind: String, help: String, secret: Bool = false,
                parse: @escaping @Sendable (String) -> Result<Value, ConfigProblem>) {
        self.name = name
        self.defaultText = defaultText
        self.kind = kind
        self.help = help
        self.isSecret = secret
        self.parse = parse
    }

    /// The same key, marked secret.
    public func secret() -> ConfigKey<Value> {
        ConfigKey(name, default: defaultText, kind: kind, help: help, secret: true, parse: parse)
    }

    public var environmentName: String { Config.environmentName(of: name) }
    public var erased: AnyConfigKey {
        AnyConfigKey(name: name, defaultText: defaultText, kind: kind, help: help, isMap: false, isSecret: isSecret,
                     validate: { text in
                         if case .failure(let problem) = self.parse(text) { return problem.description }
                         return nil
                     })
    }
}

/// A key without its value type, for validation and printing.
public struct AnyConfigKey: Sendable {
    public let name: String
    public let defaultText: String
    public let kind: String
    public let help: String
    public let isMap: Bool
    public var isSecret: Bool = false
    let validate: @Sendable (String) -> String?

    init(name: String, defaultText: String, kind: String, help: String, isMap: Bool, isSecret: Bool = false,
         validate: @escaping @Sendable (String) -> String?) {
        self.name = name
        self.defaultText = defaultText
        self.kind = kind
        self.help = help
        self.isMap = isMap
        self.isSecret = isSecret
        self.validate = validate
    }
}

/// A key whose value is a mapping (e.g. the route table `domain → host:port`).
public struct ConfigMapKey: Sendable {
    public let name: String
    public let help: String
    public init(_ name: String, help: String) {
        self.name = name
        self.help = help
    }
    public var erased: AnyConfigKey {
        AnyConfigKey(name: name, defaultText: "{}", kind: "map", help: help, isMap: true, validate: { _ in nil })
    }
}

/// The configuration of one process: YAML files plus environment overrides.
///
/// - Several files are read in order and each key takes its value from the last file that sets
///   it (a map key's whole map, too): a site-wide file first, then the service's own file
///   (`--config site.yaml --config egress-good.yaml`). Every file is checked on its own: unknown
///   keys are errors wherever they are, and an error names the file the value came from.
/// - Nested YAML mappings are flattened with dots: `redis: {url: …}` is the key `redis.url`.
/// - Every key can be overridden by `SMG_` + the key upper-cased with `.` → `_`
///   (`SMG_REDIS_URL`). A map key is overridden as `k1=v1;k2=v2`.
/// - Unknown keys in the file are errors (a typo must not silently fall back to a default).
public struct Config: Sendable {
    public let keys: [AnyConfigKey]
    var values: [String: (text: String, source: String)] = [:]
    var maps: [String: (map: [String: String], source: String)] = [:]

    public static func environmentName(of key: String) -> String {
        "SMG_" + key.uppercased().replacingOccurrences(of: ".", with: "_").replacingOccurrences(of: "-", with: "_")
    }

    /// Loads and validates one file (or none): see `init(files:environment:keys:)`.
    public init(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
                keys: [AnyConfigKey]) throws {
        try self.init(files: file.map { [$0] } ?? [], environment: environment, keys: keys)
    }

    /// Loads and validates: every known key's value must parse, every key in every file must be
    /// known. Later files override earlier ones key by key; the environment overrides them all.
    public init(files: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                keys: [AnyConfigKey]) throws {
        self.keys = keys
        let known = Dictionary(keys.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for file in files {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ConfigError(key: "--config", source: file, problem: "cannot read file: \(error.localizedDescription)")
            }
            let node: Node?
            do { node = try Yams.compose(yaml: text) } catch {
                throw ConfigError(key: "--config", source: file, problem: "not valid YAML: \(error)")
            }
            if let node {
                guard case .mapping(let mapping) = node else {
                    throw ConfigError(key: "--config", source: file, problem: "top level must be a mapping")
                }
                try flatten(mapping, prefix: "", known: known, file: file)
            }
        }
        for key in keys {
            let env = Config.environmentName(of: key.name)
            guard let value = environment[env] else { continue }
            if key.isMap {
                var map: [String: String] = [:]
                for entry in value.split(separator: ";") where !entry.trimmingCharacters(in: .whitespaces).isEmpty {
                    let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                    guard parts.count == 2, !parts[0].isEmpty else {
                        throw ConfigError(key: key.name, source: "environment \(env)",
                                          problem: "expected k1=v1;k2=v2, got \"\(entry)\"")
                    }
                    map[parts[0]] = parts[1]
                }
                maps[key.name] = (map, "environment \(env)")
            } else {
                values[key.name] = (value, "environment \(env)")
            }
        }
        for key in keys where !key.isMap {
            let (text, source) = values[key.name] ?? (key.defaultText, "default")
            if let problem = key.validate(text) {
                throw ConfigError(key: key.name, source: source, problem: Self.redact(problem, secret: key.isSecret ? text : nil))
            }
        }
    }

    /// Text safe to log: passwords in URLs (`scheme://user:password@host`) become `***`
    /// (`redis://:***@host:6379/0`), and so does every occurrence of `secret` if given.
    public static func redact(_ text: String, secret: String? = nil) -> String {
        var out = text
        if let secret, !secret.isEmpty { out = out.replacingOccurrences(of: secret, with: "***") }
        // scheme://[user]:password@ → scheme://[user]:***@ (the password may not contain '@' unescaped).
        var result = ""
        var rest = Substring(out)
        while let schemeEnd = rest.range(of: "://") {
            result += rest[..<schemeEnd.upperBound]
            rest = rest[schemeEnd.upperBound...]
            let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" || $0 == " " || $0 == "\"" || $0 == "\n" })
                ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                result += authority[...colon] + "***" + authority[at...]
            } else {
                result += authority
            }
            rest = rest[authorityEnd...]
        }
        result += rest
        // unix:///path?password=P
        if let range = result.range(of: "password=") {
            let end = result[range.upperBound...].firstIndex(where: { $0 == "&" || $0 == " " || $0 == "\"" || $0 == "\n" })
                ?? result.endIndex
            if range.upperBound < end { result.replaceSubrange(range.upperBound..<end, with: "***") }
        }
        return result
    }

    private mutating func flatten(_ mapping: Node.Mapping, prefix: String, known: [String: AnyConfigKey],
                                  file: String) throws {
        for (keyNode, valueNode) in mapping {
            guard let name = keyNode.string else {
                throw ConfigError(key: prefix + "?", source: file, problem: "keys must be strings")
            }
            let full = prefix + name
            if let key = known[full], key.isMap {
                guard case .mapping(let inner) = valueNode else {
                    throw ConfigError(key: full, source: file, problem: "must be a mapping")
                }
                var map: [String: String] = [:]
                for (k, v) in inner {
                    guard let ks = k.string, let vs = v.string else {
                        throw ConfigError(key: full, source: file, problem: "entries must be plain strings")
                    }
                    map[ks] = vs
                }
                maps[full] = (map, file)
                continue
            }
            switch valueNode {
            case .mapping(let inner):
                try flatten(inner, prefix: full + ".", known: known, file: file)
            case .scalar(let scalar):
                guard known[full] != nil else {
                    throw ConfigError(key: full, source: file, problem: "unknown key (see --print-config)")
                }
                values[full] = (scalar.string, file)
            case .sequence(let seq):
                guard known[full] != nil else {
                    throw ConfigError(key: full, source: file, problem: "unknown key (see --print-config)")
                }
                values[full] = (seq.compactMap(\.string).joined(separator: ","), file)
            }
        }
    }

    /// The value of `key` (already validated at load time, so this only fails for keys that
    /// were not passed to `init`).
    public func get<V>(_ key: ConfigKey<V>) throws -> V {
        let (text, source) = values[key.name] ?? (key.defaultText, "default")
        switch key.parse(text) {
        case .success(let v): return v
        case .failure(let problem):
            throw ConfigError(key: key.name, source: source,
                              problem: Self.redact(problem.description, secret: key.isSecret ? text : nil))
        }
    }

    public func get(_ key: ConfigMapKey) -> [String: String] { maps[key.name]?.map ?? [:] }

    /// `postconf -d`: every key with its default, kind, environment name and meaning.
    public static func describe(_ keys: [AnyConfigKey]) -> String {
        keys.map { key in
            "# \(key.help)\n# kind: \(key.kind); environment: \(environmentName(of: key.name))\n\(key.name) = \(key.defaultText)"
        }.joined(separator: "\n\n") + "\n"
    }

    /// The effective values (`postconf -n` style), for logs at start-up and `--check-config`.
    /// Secrets are redacted (secret keys as `***`, passwords inside URLs) unless
    /// `revealingSecrets` is true.
    public func effective(revealingSecrets: Bool = false) -> [String: String] {
        var out: [String: String] = [:]
        for key in keys {
            let text: String
            if key.isMap {
                text = (maps[key.name]?.map ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    .joined(separator: ";")
            } else {
                text = values[key.name]?.text ?? key.defaultText
            }
            if revealingSecrets {
                out[key.name] = text
            } else if key.isSecret {
                out[key.name] = text.isEmpty ? "" : "***"
            } else {
                out[key.name] = Self.redact(text)
            }
        }
        return out
    }
}

// MARK: - Key constructors with bounds

extension ConfigKey where Value == String {
    public static func string(_ name: String, default d: String, help: String, secret: Bool = false,
                              validate: (@Sendable (String) -> String?)? = nil) -> ConfigKey<String> {
        ConfigKey(name, default: d, kind: "string", help: help, secret: secret) { text in
            if let problem = validate?(text) { return .failure(ConfigProblem(problem)) }
            return .success(text)
        }
    }

    /// A string that must be one of `choices`; the error names them.
    public static func choice(_ name: String, default d: String, choices: [String], help: String) -> ConfigKey<String> {
        ConfigKey(name, default: d, kind: "one of \(choices.joined(separator: ", "))", help: help) { text in
            choices.contains(text)
                ? .success(text) : .failure(ConfigProblem("\"\(text)\" is not one of \(choices.joined(separator: ", "))"))
        }
    }
}

extension ConfigKey where Value == Int {
    public static func int(_ name: String, default d: Int, range: ClosedRange<Int>, help: String) -> ConfigKey<Int> {
        ConfigKey(name, default: String(d), kind: "integer \(range.lowerBound)...\(range.upperBound)", help: help) {
            text in
            guard let v = Int(text.trimmingCharacters(in: .whitespaces)) else {
                return .failure("\"\(text)\" is not an integer")
            }
            guard range.contains(v) else {
                return .failure("\(v) is out of range \(range.lowerBound)...\(range.upperBound)")
            }
            return .success(v)
        }
    }

    /// A size with an optional unit: `52428800`, `50M`, `512k`, `1G`.
    public static func size(_ name: String, default d: String, range: ClosedRange<Int>, help: String) -> ConfigKey<Int> {
        ConfigKey(name, default: d, kind: "size (bytes, or with k/M/G) \(range.lowerBound)...\(range.upperBound)",
                  help: help) { text in
            let t = text.trimmingCharacters(in: .whitespaces)
            var multiplier = 1
            var digits = Substring(t)
            switch t.last?.lowercased() {
            case "k": multiplier = 1024; digits = t.dropLast()
            case "m": multiplier = 1024 * 1024; digits = t.dropLast()
            case "g": multiplier = 1024 * 1024 * 1024; digits = t.dropLast()
            default: break
            }
            guard let v = Int(digits) else { return .failure("\"\(text)\" is not a size") }
            let bytes = v.multipliedReportingOverflow(by: multiplier)
            guard !bytes.overflow, range.contains(bytes.partialValue) else {
                return .failure("\(text) is out of range \(range.lowerBound)...\(range.upperBound) bytes")
            }
            return .success(bytes.partialValue)
        }
    }
}

extension ConfigKey where Value == Bool {
    public static func bool(_ name: String, default d: Bool, help: String) -> ConfigKey<Bool> {
        ConfigKey(name, default: d ? "true" : "false", kind: "boolean", help: help) { text in
            switch text.lowercased() {
            case "true", "yes", "on", "1": return .success(true)
            case "false", "no", "off", "0": return .success(false)
            default: return .failure("\"\(text)\" is not a boolean (true/false)")
            }
        }
    }
}

extension ConfigKey where Value == Duration {
    /// A duration: `250ms`, `30s`, `5m`, `2h`, `7d`, or plain seconds.
    public static func duration(_ name: String, default d: String, min: Duration, max: Duration,
                                help: String) -> ConfigKey<Duration> {
        ConfigKey(name, default: d, kind: "duration (ms/s/m/h/d)", help: help) { text in
            guard let v = parseDuration(text) else { return .failure("\"\(text)\" is not a duration (e.g. 30s, 5m)") }
            guard v >= min, v <= max else { return .failure("\(text) is out of range \(min)...\(max)") }
            return .success(v)
        }
    }
}

extension ConfigKey where Value == [Duration] {
    public static func durations(_ name: String, default d: String, help: String) -> ConfigKey<[Duration]> {
        ConfigKey(name, default: d, kind: "list of durations", help: help) { text in
            var out: [Duration] = []
            for part in text.split(separator: ",") {
                guard let v = parseDuration(String(part)), v > .zero else {
                    return .failure("\"\(part)\" is not a positive duration")
                }
                out.append(v)
            }
            return out.isEmpty ? .failure("needs at least one duration") : .success(out)
        }
    }
}

public func parseDuration(_ text: String) -> Duration? {
    let t = text.trimmingCharacters(in: .whitespaces).lowercased()
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
    for (suffix, factor) in units where t.hasSuffix(suffix) {
        guard let v = Double(t.dropLast(suffix.count)), v >= 0, v.isFinite else { return nil }
        return .milliseconds(Int64((v * factor * 1000).rounded()))
    }
    guard let v = Double(t), v >= 0, v.isFinite else { return nil }
    return .milliseconds(Int64((v * 1000).rounded()))
}

extension Duration {
    public var milliseconds: Int {
        let (s, atto) = components
        return Int(s) * 1000 + Int(atto / 1_000_000_000_000_000)
    }
}

extension ConfigKey where Value == Double {
    /// A finite number within `range` (`0.5`, `5`, `-1.25`).
    public static func number(_ name: String, default d: String, range: ClosedRange<Double>, help: String) -> ConfigKey<Double> {
        ConfigKey(name, default: d, kind: "number \(range.lowerBound)...\(range.upperBound)", help: help) { text in
            guard let v = Double(text.trimmingCharacters(in: .whitespaces)), v.isFinite else {
                return .failure("\"\(text)\" is not a number")
            }
            guard range.contains(v) else { return .failure("\(v) is out of range \(range.lowerBound)...\(range.upperBound)") }
            return .success(v)
        }
    }
}
