import NIOCore
@testable import SMTPProtocol

/// The server machine's wire output, one string per line fed: every decision accepts, STARTTLS
/// completes at once, AUTH succeeds for password "secret".
func transcript(_ lines: [String], _ m: inout SMTPServerStateMachine) -> [String] {
    lines.map { line in
        var wire = ""
        var queue = m.handle(.line(.line(Array(line.utf8))))
        while !queue.isEmpty {
            switch queue.removeFirst() {
            case .send(let reply): wire += reply.wireString
            case .startTLS:
                wire += "[tls]"
                queue += m.handle(.tlsStarted)
            case .askAuth(let user, let password):
                wire += "[auth \(user):\(password)]"
                queue += m.handle(.authDecision(password == "secret" ? nil : SMTPReply(.authFailed)))
            case .askMailFrom: queue += m.handle(.mailDecision(nil))
            case .askRcptTo: queue += m.handle(.rcptDecision(nil))
            case .askData: queue += m.handle(.dataDecision(SMTPReply(code: 250, "ok")))
            case .startData: wire += "[data]"
            case .refused(let reason, _): wire += "[refused: \(reason)]"
            case .close: wire += "[close]"
            case .readChunk, .discardChunk: wire += "[chunk]"
            }
        }
        return wire
    }
}
