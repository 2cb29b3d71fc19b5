public import SMGDNS
import SMGDKIM

/// Whether a stored key's TXT record is published as it should be: what `smgctl dkim check`
/// prints and smg-admin's DNS check shows, from one comparison.
public struct DKIMPublicationCheck: Sendable, Hashable {
    public enum Verdict: String, Sendable, Hashable, CaseIterable {
        /// A published record carries the stored public key.
        case ok
        /// TXT records exist, but none carries the stored key.
        case mismatch
        /// NXDOMAIN or NODATA: nothing is published.
        case missing
        /// The DNS did not answer (SERVFAIL, timeout, refused…): nothing is known.
        case lookupFailed = "lookup_failed"
    }

    public var record: DKIMKeyRecord
    public var verdict: Verdict
    /// Why, for anything but `ok` (empty then).
    public var detail: String

    public init(record: DKIMKeyRecord, verdict: Verdict, detail: String) {
        self.record = record
        self.verdict = verdict
        self.detail = detail
    }

    /// As `smgctl dkim check` prints it: `ok`, `MISMATCH (…)`, `MISSING (…)`, `LOOKUP FAILED (…)`.
    public var status: String {
        switch verdict {
        case .ok: "ok"
        case .mismatch: "MISMATCH (\(detail))"
        case .missing: "MISSING (\(detail))"
        case .lookupFailed: "LOOKUP FAILED (\(detail))"
        }
    }

    /// Looks up every record's TXT (concurrently) and compares; one result per record, in order.
    public static func check(records: [DKIMKeyRecord], resolver: DNSResolver) async -> [DKIMPublicationCheck] {
        await withTaskGroup(of: (Int, DKIMPublicationCheck).self) { group in
            for (index, record) in records.enumerated() {
                group.addTask { (index, await check(record, resolver: resolver)) }
            }
            var out = [DKIMPublicationCheck?](repeating: nil, count: records.count)
            for await (index, result) in group { out[index] = result }
            return out.compactMap { $0 }
        }
    }

    /// One record.
    public static func check(_ record: DKIMKeyRecord, resolver: DNSResolver) async -> DKIMPublicationCheck {
        let result: DNSResult<[DNSTXTData]>
        do { result = try await resolver.txt(record.recordName) } catch {
            return DKIMPublicationCheck(record: record, verdict: .lookupFailed, detail: "\(error)")
        }
        return verdict(record, result)
    }

    /// The comparison itself, for a lookup's outcome.
    public static func verdict(_ record: DKIMKeyRecord, _ result: DNSResult<[DNSTXTData]>) -> DKIMPublicationCheck {
        switch result {
        case .answer(let txts, _, _):
            let published = txts.compactMap { DKIMDNSRecord(parsing: $0.joined) }
            if published.contains(record.dnsRecord) { return .init(record: record, verdict: .ok, detail: "") }
            if published.isEmpty {
                return .init(record: record, verdict: .mismatch, detail: "no DKIM key record among \(txts.count) TXT")
            }
            return .init(record: record, verdict: .mismatch, detail: "published p= differs from the stored key")
        case .nxdomain, .nodata:
            return .init(record: record, verdict: .missing, detail: "no TXT record")
        case let other:
            return .init(record: record, verdict: .lookupFailed, detail: "\(other)")
        }
    }
}
