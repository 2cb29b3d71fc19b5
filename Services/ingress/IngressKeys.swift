import SMGRuntime
import SMGCore

enum IngressKeys {
    static let listen = ConfigKey<String>.string(
        "ingress.listen", default: "127.0.0.1:2525", help: "host:port of the SMTP submission listener.",
        validate: { HostPort.parse($0) == nil ? "expected host:port" : nil })
    static let hostname = ConfigKey<String>.string(
        "ingress.hostname", default: "smg.localdomain", help: "Name in the greeting, EHLO reply and Received header.")
    static let maxMessageSize = ConfigKey<Int>.size(
        "ingress.max_message_size", default: "50M", range: 1024...1_073_741_824,
        help: "Largest message accepted (announced as SIZE, enforced during DATA: 552 5.3.4).")
    static let maxRecipients = ConfigKey<Int>.int(
        "ingress.max_recipients", default: 100, range: 1...100_000, help: "Recipients per message (beyond: 452 4.5.3).")
    static let maxPending = ConfigKey<Int>.int(
        "ingress.max_pending", default: 100_000, range: 1...100_000_000,
        help: "Backpressure: while more messages than this wait for the scanners, MAIL gets 451 4.3.2.")
    static let allowNetworks = ConfigKey<NetworkList>(
        "ingress.allow_networks", default: "127.0.0.0/8,::1/128", kind: "list of CIDR networks",
        help: "Listener-wide allowlist: clients from other networks get 554 5.7.1 at connect.") { text in
        do { return .success(try NetworkList(parsing: text)) } catch { return .failure(ConfigProblem("\(error)")) }
    }

    static let all: [AnyConfigKey] = [
        listen.erased, hostname.erased, maxMessageSize.erased, maxRecipients.erased, maxPending.erased,
        allowNetworks.erased, StageKeys.redriveAfter.erased,
    ]
}
