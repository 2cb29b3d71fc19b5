/// Errors thrown by SMGDNS.
///
/// An extensible struct with a ``Code`` (not a frozen enum): new codes can be added without
/// breaking callers. Network failures of a lookup are *not* thrown; they are reported as a
/// ``DNSResult`` case (`.timeout`, `.servfail`, ...). Errors are thrown for malformed wire data,
/// invalid input (a host name that is not a DNS name) and invalid configuration.
public struct DNSError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, machine-readable.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Wire-format (parser) errors.
        /// The message ended before a field that the header or a length promised.
        public static let truncated = Code("truncated")
        /// A compression pointer points outside the message.
        public static let pointerOutOfRange = Code("pointerOutOfRange")
        /// A compression pointer points forward (or to itself), which could loop.
        public static let pointerNotBackward = Code("pointerNotBackward")
        /// Too many compression pointers in one name.
        public static let tooManyPointers = Code("tooManyPointers")
        /// A label length byte with the reserved bits 01 or 10 (label > 63 or extended label).
        public static let badLabel = Code("badLabel")
        /// A name longer than 255 octets in wire form.
        public static let nameTooLong = Code("nameTooLong")
        /// RDATA does not match its type's format or its RDLENGTH.
        public static let badRData = Code("badRData")
        /// Section counts that cannot fit in the message, or a second OPT record.
        public static let badCounts = Code("badCounts")
        /// Bytes left over after the last section.
        public static let trailingBytes = Code("trailingBytes")
        /// A message would exceed 65535 octets when encoded.
        public static let messageTooLarge = Code("messageTooLarge")

        // Input / configuration errors.
        /// A string that is not a valid DNS name (empty label, label > 63, name > 255).
        public static let invalidName = Code("invalidName")
        /// A string that is not an IPv4 or IPv6 address literal.
        public static let invalidAddress = Code("invalidAddress")
        /// A configuration value that cannot be used (no servers, bad host:port, ...).
        public static let invalidConfiguration = Code("invalidConfiguration")

        // Transport errors (used internally and by ``DNSResolver/query(_:type:)``).
        /// No acceptable response arrived within the per-try timeout.
        public static let timeout = Code("timeout")
        /// A socket or connection failed.
        public static let network = Code("network")
    }

    public var code: Code
    /// Human-readable detail for logs; never shown to SMTP clients.
    public var detail: String

    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    public var description: String { detail.isEmpty ? "DNSError(\(code))" : "DNSError(\(code): \(detail))" }
}
