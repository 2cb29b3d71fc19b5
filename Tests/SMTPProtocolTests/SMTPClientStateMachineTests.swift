import XCTest
import NIOCore
@testable import SMTPProtocol

/// Transcript tests of the pure client: each step feeds one input and checks the actions.
final class SMTPClientStateMachineTests: XCTestCase {
    typealias M = SMTPClientStateMachine
    func r(_ code: Int, _ text: String = "ok", _ more: [String] = []) -> M.Input {
        .reply(SMTPReply(code: code, lines: [text] + more))
    }
    func tx(_ rcpts: [String] = ["a@x.test", "b@x.test"], size: Int = 100, eightBit: Bool = false) -> M.Transaction {
        M.Transaction(reversePath: "s@c.test", recipients: rcpts, size: size, eightBit: eightBit)
    }

    /// Greeting, EHLO (with PIPELINING), one pipelined transaction with one refused recipient.
    func testPipelinedTransactionDecidesEachRecipient() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        XCTAssertTrue(m.awaitingReply)
        XCTAssertEqual(m.receive(r(220, "mx ready")), [.send(["EHLO gw.test"])])
        XCTAssertEqual(m.receive(r(250, "mx", ["PIPELINING", "SIZE 1000", "8BITMIME"])), [.ready])
        XCTAssertEqual(m.extensions.sizeLimit, 1000)
        XCTAssertEqual(m.begin(tx()), [.send(["MAIL FROM:<s@c.test> SIZE=100", "RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>"])])
        XCTAssertEqual(m.receive(r(250)), [])
        XCTAssertEqual(m.receive(r(250)), [])
        let refused = SMTPReply(code: 550, enhanced: "5.1.1", "no such user")
        XCTAssertEqual(m.receive(.reply(refused)), [.recipient(index: 1, reply: refused), .confirmData])
        XCTAssertFalse(m.awaitingReply)
        XCTAssertEqual(m.receive(.dataConfirmed(true)), [.send(["DATA"])])
        XCTAssertEqual(m.timeout, m.timeouts.dataInitiation)
        XCTAssertEqual(m.receive(r(354, "go on")), [.sendBody])
        XCTAssertEqual(m.timeout, m.timeouts.dataTermination)
        let queued = SMTPReply(code: 250, enhanced: "2.0.0", "queued")
        XCTAssertEqual(m.receive(.reply(queued)), [.recipient(index: 0, reply: queued), .transactionDone(abandoned: false), .ready])
        XCTAssertEqual(m.transactions, 1)
        // Reuse: the next transaction needs no RSET after a completed one.
        XCTAssertEqual(m.begin(tx(["c@x.test"])), [.send(["MAIL FROM:<s@c.test> SIZE=100", "RCPT TO:<c@x.test>"])])
    }

    func testWithoutPipeliningCommandsGoOneByOne() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220))
        XCTAssertEqual(m.receive(r(250, "mx")), [.ready])
        XCTAssertEqual(m.begin(tx()), [.send(["MAIL FROM:<s@c.test>"])])
        XCTAssertEqual(m.receive(r(250)), [.send(["RCPT TO:<a@x.test>"])])
        XCTAssertEqual(m.receive(r(250)), [.send(["RCPT TO:<b@x.test>"])])
        XCTAssertEqual(m.receive(r(250)), [.confirmData])
    }

    func testRefusedMailDecidesAllAndResets() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["PIPELINING"]))
        _ = m.begin(tx())
        let no = SMTPReply(code: 451, enhanced: "4.7.1", "greylisted")
        XCTAssertEqual(m.receive(.reply(no)), [])
        XCTAssertEqual(m.receive(r(503, "need MAIL")), [])
        XCTAssertEqual(m.receive(r(503, "need MAIL")), [
            .recipient(index: 0, reply: no), .recipient(index: 1, reply: no), .transactionDone(abandoned: false),
            .send(["RSET"]),
        ])
        XCTAssertEqual(m.receive(r(250)), [.ready])
    }

    func testAllRecipientsRefusedSendsNoData() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["PIPELINING"]))
        _ = m.begin(tx(["a@x.test"]))
        _ = m.receive(r(250))
        let no = SMTPReply(code: 550, "no")
        XCTAssertEqual(m.receive(.reply(no)), [.recipient(index: 0, reply: no), .transactionDone(abandoned: false), .send(["RSET"])])
    }

    func testAbandonBeforeDataSendsNothing() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx"))
        _ = m.begin(tx(["a@x.test"])); _ = m.receive(r(250)); _ = m.receive(r(250))
        let actions = m.receive(.dataConfirmed(false))
        XCTAssertEqual(actions.last, .send(["RSET"]))
        XCTAssertTrue(actions.contains(.transactionDone(abandoned: true)))
        XCTAssertFalse(actions.contains(.send(["DATA"])))
    }

    func testHeloFallbackAfterEhlo5xx() {
        var m = M(heloName: "gw.test", tlsMode: .opportunistic)
        _ = m.receive(r(220))
        XCTAssertEqual(m.receive(r(502, "what?")), [.send(["HELO gw.test"])])
        XCTAssertEqual(m.receive(r(250, "hi")), [.ready])
        XCTAssertFalse(m.extensions.pipelining)
    }

    func testGreeting4xxFailsSessionPolitely() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        let busy = SMTPReply(code: 421, enhanced: "4.3.2", "busy")
        XCTAssertEqual(m.receive(.reply(busy)), [.sessionFailed(busy), .send(["QUIT"])])
        XCTAssertEqual(m.receive(.connectionClosed("eof")), [])
    }

    func testOpportunisticStartTLSThenEhloAgain() {
        var m = M(heloName: "gw.test", tlsMode: .opportunistic)
        _ = m.receive(r(220))
        XCTAssertEqual(m.receive(r(250, "mx", ["STARTTLS", "PIPELINING"])), [.send(["STARTTLS"])])
        XCTAssertEqual(m.receive(r(220, "go ahead")), [.startTLS])
        XCTAssertEqual(m.timeout, m.timeouts.tlsHandshake)
        XCTAssertEqual(m.receive(.tlsEstablished), [.send(["EHLO gw.test"])])
        XCTAssertTrue(m.extensions.keywords.isEmpty, "extensions from before TLS are forgotten (RFC 3207 §4.2)")
        XCTAssertEqual(m.receive(r(250, "mx", ["PIPELINING"])), [.ready])
        XCTAssertTrue(m.tlsActive)
    }

    func testOpportunisticCarriesOnWhenStartTLSRefused() {
        var m = M(heloName: "gw.test", tlsMode: .opportunistic)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["STARTTLS"]))
        XCTAssertEqual(m.receive(r(454, "TLS not available")), [.ready])
        XCTAssertFalse(m.tlsActive)
    }

    func testHandshakeFailureIsFlaggedForPlaintextRetry() {
        var m = M(heloName: "gw.test", tlsMode: .opportunistic)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["STARTTLS"])); _ = m.receive(r(220))
        let actions = m.receive(.tlsFailed("bad record mac"))
        XCTAssertTrue(m.tlsHandshakeFailed)
        XCTAssertEqual(actions.last, .close)
    }

    func testRequiredTLSFailsWhenNotOffered() {
        var m = M(heloName: "gw.test", tlsMode: .required)
        _ = m.receive(r(220))
        let actions = m.receive(r(250, "mx"))
        guard case .sessionFailed(let reply)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(reply.enhanced, "4.7.5")
    }

    func testNeverSends8BitToA7BitHop() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["PIPELINING"]))
        let actions = m.begin(tx(["a@x.test"], eightBit: true))
        guard case .recipient(0, let reply)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(reply.code, 554)
        XCTAssertEqual(reply.enhanced, "5.6.3")
        XCTAssertFalse(actions.contains { if case .send = $0 { return true } else { return false } })
        XCTAssertTrue(m.isReady)
        // With 8BITMIME it goes, declared.
        var n = M(heloName: "gw.test", tlsMode: .never)
        _ = n.receive(r(220)); _ = n.receive(r(250, "mx", ["8BITMIME"]))
        XCTAssertEqual(n.begin(tx(["a@x.test"], eightBit: true)), [.send(["MAIL FROM:<s@c.test> BODY=8BITMIME"])])
    }

    func testUTF8AddressNeedsSMTPUTF8AndSizeLimitIsRespected() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["SIZE 50"]))
        guard case .recipient(0, let big)? = m.begin(tx(["a@x.test"], size: 51)).first else { return XCTFail() }
        XCTAssertEqual(big.enhanced, "5.3.4")
        guard case .recipient(0, let utf)? = m.begin(tx(["jürgen@x.test"], size: 10)).first else { return XCTFail() }
        XCTAssertEqual(utf.enhanced, "5.6.7")
    }

    func testTimeoutAndLostConnectionFailTheOpenRecipients() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx", ["PIPELINING"]))
        _ = m.begin(tx(["a@x.test"])); _ = m.receive(r(250)); _ = m.receive(r(250)); _ = m.receive(.dataConfirmed(true))
        _ = m.receive(r(354))
        let actions = m.receive(.timeout)
        guard case .recipient(0, let reply)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertTrue(reply.isTransient)
        XCTAssertEqual(actions.last, .close)
        XCTAssertFalse(m.isReady)
    }

    func testUnsolicitedReplyBreaksTheSession() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx"))
        let actions = m.receive(r(250, "surprise"))
        XCTAssertEqual(actions.last, .close)
    }

    func testQuit() {
        var m = M(heloName: "gw.test", tlsMode: .never)
        _ = m.receive(r(220)); _ = m.receive(r(250, "mx"))
        XCTAssertEqual(m.quit(), [.send(["QUIT"])])
        XCTAssertEqual(m.receive(r(221, "bye")), [.close])
    }
}
