public import SMGCore
public import SMGRedis
public import SMGStore
public import SMGDNS
public import SMTPClient
import SMGNDR
import CZlib
public import Foundation

/// Counts TLS sessions per policy domain and UTC day for TLS-RPT (RFC 8460): in memory, added to
/// Redis (`Keyspace.tlsReport`) every few seconds in one pipeline. Statistics, not state: a
/// killed egress loses at most the last seconds of counts.
public actor TLSReportCounter {
    let redis: RedisClient
    let keys: Keyspace
    /// Per Redis key: the policy description and field increments not yet written.
    private var pending: [String: (day: String, domain: String, policy: String, counts: [String: Int])] = [:]
    public static let retention = 8 * 86400

    public init(redis: RedisClient, keys: Keyspace) {
        self.redis = redis
        self.keys = keys
    }

    /// Starts the flush loop (every `interval`).
    public nonisolated func start(interval: Duration = .seconds(5)) {
        Task.detached { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                await self.flush()
            }
        }
    }

    /// One session (or a host not connected to because of the policy) of `decision`'s domain.
    public func count(_ decision: TLSPolicyDecision, failure: TLSPolicyFailure?, target: SMTPTarget, source: String?,
                      now: Date = Date()) {
        let day = TLSRPT.day(now)
        let key = keys.tlsReport(day: day, domain: decision.domain)
        let p = decision.reportPolicy
        let policy = JSONValue.object(["type": .string(p.type), "strings": .array(p.strings.map { .string($0) }),
                                       "mx": .array(p.mxHosts.map { .string($0) })]).jsonText
        var entry = pending[key] ?? (day, decision.domain, policy, [:])
        entry.policy = policy
        let field = failure.map {
            ["fail", $0.type, target.hostname ?? "", target.address, source ?? ""].map { $0.replacingOccurrences(of: "|", with: "") }
                .joined(separator: "|")
        } ?? "ok"
        entry.counts[field, default: 0] += 1
        pending[key] = entry
    }

    /// Writes what was counted; on a Redis failure the counts wait for the next flush.
    public func flush() async {
        guard !pending.isEmpty else { return }
        let batch = pending
        pending = [:]
        var commands: [[RedisArg]] = []
        for (key, entry) in batch {
            commands.append(["HSET", .init(key), "policy", .init(entry.policy)])
            for (field, n) in entry.counts { commands.append(["HINCRBY", .init(key), .init(field), .init(n)]) }
            commands.append(["EXPIRE", .init(key), .init(Self.retention)])
            commands.append(["SADD", .init(keys.tlsReportDomains(day: entry.day)), .init(entry.domain)])
            commands.append(["EXPIRE", .init(keys.tlsReportDomains(day: entry.day)), .init(Self.retention)])
        }
        do { _ = try await redis.pipeline(commands) } catch {
            for (key, entry) in batch {
                var merged = pending[key] ?? entry
                if pending[key] != nil { for (f, n) in entry.counts { merged.counts[f, default: 0] += n } }
                pending[key] = merged
            }
        }
    }
}

extension JSONValue {
    /// Compact JSON with sorted keys.
    var jsonText: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }
}

/// TLS-RPT reports (RFC 8460 §4) and their mails (§5.3).
public enum TLSRPT {
    /// `YYYY-MM-DD` of `date` in UTC.
    public static func day(_ date: Date) -> String {
        let c = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: date)
        return String(format: "%04d-%02d-%02d", c.year ?? 1970, c.month ?? 1, c.day ?? 1)
    }

    /// The `mailto:` addresses of a `_smtp._tls` TXT record set (`v=TLSRPTv1; rua=mailto:…,https:…`);
    /// nil when there is no valid record (exactly one must start with `v=TLSRPTv1`).
    public static func mailtoAddresses(_ records: [String]) -> [String]? {
        let candidates = records.filter { $0.hasPrefix("v=TLSRPTv1;") || $0.hasPrefix("v=TLSRPTv1 ") }
        guard candidates.count == 1 else { return nil }
        var out: [String] = []
        for field in candidates[0].split(separator: ";") {
            let parts = field.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, parts[0] == "rua" else { continue }
            for uri in parts[1].split(separator: ",") {
                let u = uri.trimmingCharacters(in: .whitespaces)
                guard u.lowercased().hasPrefix("mailto:") else { continue }
                var address = String(u.dropFirst(7))
                if let q = address.firstIndex(of: "?") { address = String(address[..<q]) }
                address = address.removingPercentEncoding ?? address
                if address.contains("@"), !address.contains(where: { $0 == " " || $0 == "<" || $0 == ">" || $0.isNewline }) {
                    out.append(address)
                }
            }
        }
        return out
    }

    /// The report of one policy domain for `day`, from its counter hash (field → value).
    public static func build(domain: String, day: String, counters: [String: String], organization: String,
                             contact: String, submitter: String) -> JSONValue? {
        var success = 0, failure = 0
        var details: [String: Int] = [:]
        for (field, value) in counters {
            guard let n = Int(value) else { continue }
            if field == "ok" { success += n } else if field.hasPrefix("fail|") {
                failure += n
                details[field, default: 0] += n
            }
        }
        guard success + failure > 0 else { return nil }
        let policy = counters["policy"].flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        func strings(_ key: String) -> [JSONValue] {
            if case .object(let o)? = policy, case .array(let a)? = o[key] { return a }
            return []
        }
        var policyObject: [String: JSONValue] = ["policy-domain": .string(domain)]
        if case .object(let o)? = policy, case .string(let type)? = o["type"] { policyObject["policy-type"] = .string(type) }
        else { policyObject["policy-type"] = "no-policy-found" }
        if !strings("strings").isEmpty { policyObject["policy-string"] = .array(strings("strings")) }
        if !strings("mx").isEmpty { policyObject["mx-host"] = .array(strings("mx")) }
        let failureDetails: [JSONValue] = details.sorted { $0.key < $1.key }.map { field, n in
            let p = field.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            var d: [String: JSONValue] = ["result-type": .string(p[1]), "failed-session-count": .int(n)]
            if p.count > 2, !p[2].isEmpty { d["receiving-mx-hostname"] = .string(p[2]) }
            if p.count > 3, !p[3].isEmpty { d["receiving-ip"] = .string(p[3]) }
            if p.count > 4, !p[4].isEmpty { d["sending-mta-ip"] = .string(p[4]) }
            return .object(d)
        }
        var entry: [String: JSONValue] = [
            "policy": .object(policyObject),
            "summary": ["total-successful-session-count": .int(success), "total-failure-session-count": .int(failure)],
        ]
        if !failureDetails.isEmpty { entry["failure-details"] = .array(failureDetails) }
        return .object([
            "organization-name": .string(organization),
            "date-range": ["start-datetime": .string("\(day)T00:00:00Z"), "end-datetime": .string("\(day)T23:59:59Z")],
            "contact-info": .string(contact),
            "report-id": .string("\(day)_\(domain)@\(submitter)"),
            "policies": [.object(entry)],
        ])
    }

    /// The report mail (RFC 8460 §5.3): multipart/report; report-type="tlsrpt", a short text and
    /// the gzip-compressed JSON as application/tlsrpt+gzip.
    public static func mail(report: JSONValue, domain: String, day: String, submitter: String, from: String,
                            to: [String], now: Date) -> [UInt8] {
        let json = Array(report.jsonText.utf8)
        let gz = gzip(json)
        let start = Int(ISO8601DateFormatter().date(from: "\(day)T00:00:00Z")?.timeIntervalSince1970 ?? 0)
        let end = start + 86399
        let reportID = "\(day)_\(domain)@\(submitter)"
        let boundary = "=_tlsrpt_\(UInt64.random(in: 0...UInt64.max))"
        // RFC 8460 §5.3: submitter!policy-domain!begin!end[!unique-id].json.gz, unique-id alphanumeric.
        let filename = "\(submitter)!\(domain)!\(start)!\(end)!\(day.filter(\.isNumber)).json.gz"
        let date = Timestamp.rfc5322(now)
        var b64 = Data(gz).base64EncodedString()
        var lines: [String] = []
        while !b64.isEmpty {
            lines.append(String(b64.prefix(76)))
            b64 = String(b64.dropFirst(76))
        }
        let text = """
            From: \(from)\r
            To: \(to.joined(separator: ", "))\r
            Date: \(date)\r
            Subject: Report Domain: \(domain) Submitter: \(submitter) Report-ID: <\(reportID)>\r
            Message-ID: <tlsrpt.\(day).\(domain)@\(submitter)>\r
            TLS-Report-Domain: \(domain)\r
            TLS-Report-Submitter: \(submitter)\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type="tlsrpt"; boundary="\(boundary)"\r
            \r
            --\(boundary)\r
            Content-Type: text/plain; charset=us-ascii\r
            \r
            This is an aggregate TLS report (RFC 8460) from \(submitter) about mail sent to\r
            \(domain) on \(day) (UTC). The report is attached as gzip-compressed JSON.\r
            \r
            --\(boundary)\r
            Content-Type: application/tlsrpt+gzip\r
            Content-Transfer-Encoding: base64\r
            Content-Disposition: attachment; filename="\(filename)"\r
            \r
            \(lines.joined(separator: "\r\n"))\r
            --\(boundary)--\r

            """
        return Array(text.utf8)
    }

    /// gzip (RFC 1952) of `bytes` with zlib.
    public static func gzip(_ bytes: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip wrapper.
        guard deflateInit2_(&stream, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY,
                            ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return [] }
        defer { deflateEnd(&stream) }
        var input = bytes
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(bytes.count))) + 32)
        let produced: Int = input.withUnsafeMutableBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = UInt32(inBuf.count)
                stream.next_out = outBuf.baseAddress
                stream.avail_out = UInt32(outBuf.count)
                guard deflate(&stream, Z_FINISH) == Z_STREAM_END else { return 0 }
                return outBuf.count - Int(stream.avail_out)
            }
        }
        return Array(output.prefix(produced))
    }
}

/// Builds and sends the reports of one day: one mail per policy domain that publishes a TLSRPT
/// record, into the pipeline (scanned, signed with the gateway's own domain, delivered like any
/// gateway-written mail).
public struct TLSReportSender: Sendable {
    public let store: MessageStore
    public let resolver: DNSResolver
    public let organization: String
    public let contact: String
    public let submitter: String
    public let from: String
    public let site: String
    public let instance: String

    /// `submitter`: the gateway's own domain; reports name postmaster@ it as the contact and come
    /// from tlsrpt-noreply@ it.
    public init(store: MessageStore, resolver: DNSResolver, organization: String, submitter: String, site: String,
                instance: String) {
        self.store = store
        self.resolver = resolver
        self.organization = organization
        self.contact = "postmaster@\(submitter)"
        self.submitter = submitter
        self.from = "TLS reports <tlsrpt-noreply@\(submitter)>"
        self.site = site
        self.instance = instance
    }

    /// One report of `day`: its domain, where it goes, the JSON.
    public struct Built: Sendable {
        public var domain: String
        public var rua: [String]
        public var report: JSONValue
    }

    /// The reports of `day` for domains with a TLSRPT record and at least one counted session.
    public func build(day: String) async throws -> [Built] {
        let keys = store.keys
        let domains = (try await store.redis.command(["SMEMBERS", .init(keys.tlsReportDomains(day: day))]).array ?? [])
            .compactMap(\.string).sorted()
        var out: [Built] = []
        for domain in domains {
            guard case .answer(let txt, _, _)? = try? await resolver.txt("_smtp._tls.\(domain)"),
                  let rua = TLSRPT.mailtoAddresses(txt.map(\.joined)), !rua.isEmpty
            else { continue }
            var counters: [String: String] = [:]
            for (field, value) in try await store.redis.command(["HGETALL", .init(keys.tlsReport(day: day, domain: domain))]).fieldPairs {
                counters[field] = value.string
            }
            if let report = TLSRPT.build(domain: domain, day: day, counters: counters, organization: organization,
                                            contact: contact, submitter: submitter) {
                out.append(Built(domain: domain, rua: rua, report: report))
            }
        }
        return out
    }

    /// Sends the reports of `day` once for the whole gateway (`Keyspace.tlsReportSent`); returns
    /// the ids of the report mails, or nil when another process has sent that day already.
    public func send(day: String, force: Bool = false, now: Date = Date()) async throws -> [(String, MessageID)]? {
        let marker = store.keys.tlsReportSent(day: day)
        if !force {
            let set = try await store.redis.command(["SET", .init(marker), .init(instance), "NX", "EX", .init(TLSReportCounter.retention)])
            if set.isNull { return nil }
        }
        var sent: [(String, MessageID)] = []
        do {
            for built in try await build(day: day) {
                let body = TLSRPT.mail(report: built.report, domain: built.domain, day: day, submitter: submitter,
                                          from: from, to: built.rua, now: now)
                for address in built.rua {
                    let id = MessageID.make(now: now)
                    let message = NDRSender.gatewayMessage(
                        id: id, to: address, customer: nil, body: body,
                        facts: ["kind": "tlsrpt", "report_domain": .string(built.domain), "day": .string(day)],
                        site: site, instance: instance, now: now)
                    _ = try await store.accept(id: id, envelope: message.envelope, body: message.body, event: message.accepted,
                                               topic: message.topic, redriveAfterMilliseconds: 0)   // due now: the next redrive pass takes it
                    sent.append((address, id))
                }
            }
        } catch {
            if !force { _ = try? await store.redis.command(["DEL", .init(marker)]) }
            throw error
        }
        return sent
    }
}
