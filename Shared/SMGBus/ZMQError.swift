internal import CZeroMQ

/// An error from libzmq (or from this layer's use of it). Extensible struct, not an enum.
public struct ZMQError: Error, Sendable, CustomStringConvertible, Hashable {
    /// The errno value reported by `zmq_errno()` (e.g. `EADDRINUSE`, `EPROTONOSUPPORT`,
    /// `ETERM`), or `ZMQError.closedCode` when the socket had already been closed.
    public var code: Int32
    /// `zmq_strerror(code)`, or a message of this layer.
    public var message: String
    /// The operation that failed, e.g. `zmq_bind tcp://127.0.0.1:*`.
    public var operation: String

    public init(code: Int32, message: String, operation: String) {
        self.code = code
        self.message = message
        self.operation = operation
    }

    /// Code used when an operation is attempted on a socket that was closed.
    public static let closedCode: Int32 = -1

    public var description: String { "ZMQError(\(code)) in \(operation): \(message)" }

    /// Captures `zmq_errno()`; call immediately after the failing libzmq call.
    static func last(_ operation: String) -> ZMQError {
        fromCode(zmq_errno(), operation)
    }

    static func fromCode(_ code: Int32, _ operation: String) -> ZMQError {
        ZMQError(code: code, message: String(cString: zmq_strerror(code)), operation: operation)
    }

    static func closed(_ operation: String) -> ZMQError {
        ZMQError(code: closedCode, message: "socket is closed", operation: operation)
    }
}
