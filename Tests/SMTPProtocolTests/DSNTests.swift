import XCTest
import NIOCore
@testable import SMTPProtocol

/// RFC 3461: the parameters' grammar, the server taking them in, the client passing them on.
final class DSNTests: XCTestCase {
    func testXTextRoundTripAndHostileInput() {
        XCTAssertEqual(XText.decode("abc+2Bdef+3D"), "abc+def=")
        XCTAssertEqual(XText.encode("a b+c=d\u{e4}"), "a+20b+2Bc+3Dd+C3+A4")
        XCTAssertEqual(XText.decode(XText.encode("Grüße + = ;x")), "Grüße + = ;x")
        for bad in ["a=b", "a+2", "a+zz", "a+2b", "a b", "a\u{7f}", "+FF+FE"] {   // lower-case hex, bare =, space, bad UTF-8
            XCTAssertNil(XText.decode(bad), bad)
        }
    }

    func testParameterValues() {
        XCTAssertEqual(DSNParameters.notify("never"), ["NEVER"])
        XCTAssertEqual(DSNParameters.notify("DELAY,success"), ["SUCCESS", "DELAY"])
        for bad in ["NEVER,SUCCESS", "SUCCESS,SUCCESS", "", "SUCCESS,", "ALWAYS"] { XCTAssertNil(DSNParameters.notify(bad), bad) }
        XCTAssertEqual(DSNParameters.ret("hdrs"), "HDRS")
        XCTAssertNil(DSNParameters.ret("BODY"))
        XCTAssertEqual(DSNParameters.envelopeID("QQ+2B1"), "QQ+1")
        XCTAssertNil(DSNParameters.envelopeID(String(repeating: "x", count: 101)))
        XCTAssertNil(DSNParameters.envelopeID("a+0Ab"), "a line break must never reach a report field")
        XCTAssertEqual(DSNParameters.originalRecipient("RFC822;bob+2Bx@d.test"), "rfc822;bob+x@d.test")
        for bad in ["bob@d.test", ";bob@d.test", "rfc822;", "rfc 822;b@d", "rfc822;a+0Db@d"] {
            XCTAssertNil(DSNParameters.originalRecipient(bad), bad)
        }
        XCTAssertEqual(DSNParameters.encodeOriginalRecipient("rfc822;bob+x@d.test"), "rfc822;bob+2Bx@d.test")
    }

    /// The reply codes only.
    func run(_ lines: [String], _ m: inout SMTPServerStateMachine) -> [String] {
        transcript(lines, &m).map { String($0.prefix(3)) }
    }

    func testServerTakesValidParametersAndRefusesBadOnes() {
        var m = SMTPServerStateMachine(configuration: .init(hostname: "mx.test"))
        _ = m.handle(.connectionDecision(nil))
        XCTAssertTrue(m.extensions.contains("DSN"))
        XCTAssertEqual(run(["EHLO c", "MAIL FROM:<a@c.test> RET=BODY", "MAIL FROM:<a@c.test> ENVID=a=b",
                            "MAIL FROM:<a@c.test> RET=FULL ENVID=env+2B1",
                            "RCPT TO:<x@d.test> NOTIFY=NEVER,DELAY", "RCPT TO:<x@d.test> ORCPT=rfc822;x+zz",
                            "RCPT TO:<x@d.test> FOO=1",
                            "RCPT TO:<x@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;X@d.test",
                            "RCPT TO:<x@d.test> NOTIFY=NEVER", "RCPT TO:<y@d.test>"], &m),
                       ["250", "501", "501", "250", "501", "501", "555", "250", "250", "250"])
        let envelope = m.envelope!
        XCTAssertEqual(envelope.mailParameters["RET"], "FULL")
        XCTAssertEqual(envelope.mailParameters["ENVID"], "env+2B1")
        XCTAssertEqual(envelope.recipients, ["x@d.test", "y@d.test"])
        XCTAssertEqual(envelope.recipientParameters["x@d.test"], ["NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;X@d.test"],
                       "a recipient given twice keeps its first parameters")
        XCTAssertNil(envelope.recipientParameters["y@d.test"])
    }

    func testServerWithoutDSNNeitherOffersNorAcceptsIt() {
        var m = SMTPServerStateMachine(configuration: .init(hostname: "mx.test", dsn: false))
        _ = m.handle(.connectionDecision(nil))
        XCTAssertFalse(m.extensions.contains("DSN"))
        XCTAssertEqual(run(["EHLO c", "MAIL FROM:<a@c.test> RET=FULL", "MAIL FROM:<a@c.test>", "RCPT TO:<x@d.test> NOTIFY=NEVER"], &m),
                       ["250", "555", "250", "555"])
    }

    func testClientPassesParametersOnlyToADSNServer() {
        typealias M = SMTPClientStateMachine
        let dsn = M.DSNOptions(ret: "HDRS", envelopeID: "id 1", recipients: [
            .init(notify: ["SUCCESS", "DELAY"], originalRecipient: "rfc822;A+b@x.test"), .init()])
        let t = M.Transaction(reversePath: "s@c.test", recipients: ["a@x.test", "b@x.test"], size: 10, eightBit: false, dsn: dsn)
        for offers in [true, false] {
            var m = M(heloName: "gw.test", tlsMode: .never)
            _ = m.receive(.reply(SMTPReply(code: 220, lines: ["mx"])))
            _ = m.receive(.reply(SMTPReply(code: 250, lines: ["mx", "PIPELINING"] + (offers ? ["DSN"] : []))))
            XCTAssertEqual(m.begin(t), [.send(offers
                ? ["MAIL FROM:<s@c.test> RET=HDRS ENVID=id+201", "RCPT TO:<a@x.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;A+2Bb@x.test",
                   "RCPT TO:<b@x.test>"]
                : ["MAIL FROM:<s@c.test>", "RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>"])])
        }
    }
}
