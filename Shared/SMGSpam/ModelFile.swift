import Foundation

/// The model as a file: token statistics only, never message texts. Text, one token a line, so a
/// reviewer can read what the model learned and `diff` two models:
///
///     # smg-spam-model 1
///     messages <spam> <ham>
///     <spam count> <ham count> <token>
///
/// The token is the rest of the line (it never contains a line break).
public enum SpamModelFile {
    public struct FormatError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public static let magic = "# smg-spam-model 1"

    public static func encode(_ model: BayesModel) -> String {
        var out = "\(magic)\nmessages \(model.spamMessages) \(model.hamMessages)\n"
        for (token, c) in model.tokens.sorted(by: { $0.key < $1.key }) {
            out += "\(c.spam) \(c.ham) \(token)\n"
        }
        return out
    }

    public static func decode(_ text: String, path: String = "model") throws -> BayesModel {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).makeIterator()
        guard lines.next().map(String.init) == magic else {
            throw FormatError(description: "\(path): not a spam model file (first line must be \"\(magic)\")")
        }
        guard let header = lines.next()?.split(separator: " "), header.count == 3, header[0] == "messages",
              let spam = Int(header[1]), let ham = Int(header[2]) else {
            throw FormatError(description: "\(path): line 2 must be \"messages <spam> <ham>\"")
        }
        var model = BayesModel(spamMessages: spam, hamMessages: ham)
        var number = 2
        while let line = lines.next() {
            number += 1
            let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let s = UInt32(parts[0]), let h = UInt32(parts[1]), !parts[2].isEmpty else {
                throw FormatError(description: "\(path): line \(number) must be \"<spam> <ham> <token>\"")
            }
            model.tokens[String(parts[2])] = TokenCounts(spam: s, ham: h)
        }
        return model
    }

    public static func read(path: String) throws -> BayesModel {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw FormatError(description: "\(path): cannot read the model file (\(error.localizedDescription))")
        }
        return try decode(String(decoding: data, as: UTF8.self), path: path)
    }

    /// Drops tokens seen in fewer than `minimum` messages: they rarely decide a verdict (Robinson's
    /// smoothing keeps them near 0.5) and make up most of a model's size.
    public static func pruned(_ model: BayesModel, minimum: Int) -> BayesModel {
        var out = model
        out.tokens = model.tokens.filter { Int($0.value.spam) + Int($0.value.ham) >= minimum }
        return out
    }
}

/// Reads a training corpus: every regular file of a directory (not recursive, sorted), with an
/// mbox `From ` separator line dropped and bare LF line ends turned into CRLF, as ingress stores mail.
public enum CorpusReader {
    public static func messages(in directory: String) throws -> [(name: String, raw: [UInt8])] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw SpamModelFile.FormatError(description: "\(directory): not a directory")
        }
        let names = try fm.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }.sorted()
        var out: [(String, [UInt8])] = []
        for name in names {
            let path = (directory as NSString).appendingPathComponent(name)
            var sub: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &sub), !sub.boolValue,
                  let data = fm.contents(atPath: path) else { continue }
            out.append((name, normalise(Array(data))))
        }
        return out
    }

    public static func normalise(_ bytes: [UInt8]) -> [UInt8] {
        var start = 0
        if bytes.starts(with: Array("From ".utf8)), let nl = bytes.firstIndex(of: 0x0A) { start = nl + 1 }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count - start + bytes.count / 40)
        var previous: UInt8 = 0
        for b in bytes[start...] {
            if b == 0x0A && previous != 0x0D { out.append(0x0D) }
            out.append(b)
            previous = b
        }
        return out
    }
}
