import SMGRuntime
import SMGCore

enum IngressKeys {
    static let listen = ConfigKey<String>.string(
        "ingress.listen", default: "127.0.0.1:2525", help: "host:port of the SMTP submission listener (STARTTLS).",
        validate: { HostPort.parse($0) == nil ? "expected host:port" : nil })
    static let implicitTLSListen = ConfigKey<String>.string(
        "ingress.implicit_tls_listen", default: "",
        help: "host:port of a second listener with TLS from the first byte (like port 465); empty = off. Needs a certificate.",
        validate: { $0.isEmpty || HostPort.parse($0) != nil ? nil : "expected host:port" })
    static let hostname = ConfigKey<String>.string(
        "ingress.hostname", default: "smg.localdomain", help: "Name in the greeting, EHLO reply and Received header.")
    static let tlsCertificate = ConfigKey<String>.string(
        "ingress.tls_certificate", default: "", help: "PEM certificate chain for STARTTLS / implicit TLS; empty = no TLS.")
    static let tlsKey = ConfigKey<String>.string(
        "ingress.tls_key", default: "", help: "PEM private key of ingress.tls_certificate.")
    static let requireAuth = ConfigKey<Bool>.bool(
        "ingress.require_auth", default: true,
        help: "MAIL needs a successful AUTH (R1). Turning it off makes every allowed network a relay: only for trusted networks.")
    static let allowPlaintextAuth = ConfigKey<Bool>.bool(
        "ingress.allow_plaintext_auth", default: false,
        help: "Offer AUTH on sessions without TLS (R1 says only over TLS unless an operator explicitly allows it).")
    static let maxMessageSize = ConfigKey<Int>.size(
        "ingress.max_message_size", default: "50M", range: 1024...1_073_741_824,
        help: "Largest message accepted (announced as SIZE, enforced during DATA: 552 5.3.4).")
    static let maxRecipients = ConfigKey<Int>.int(
        "ingress.max_recipients", default: 100, range: 1...100_000, help: "Recipients per message (beyond: 452 4.5.3).")
    static let maxCommands = ConfigKey<Int>.int(
        "ingress.max_commands", default: 10_000, range: 10...10_000_000, help: "Commands per connection (beyond: 421 4.7.0).")
    static let maxErrors = ConfigKey<Int>.int(
        "ingress.max_errors", default: 20, range: 1...10_000, help: "Protocol errors per connection (then 421 4.7.0).")
    static let commandTimeout = ConfigKey.duration(
        "ingress.command_timeout", default: "5m", min: .seconds(1), max: .seconds(3600),
        help: "Time allowed for the next complete command line, idle or dripping (then 421 4.4.2).")
    static let dataTimeout = ConfigKey.duration(
        "ingress.data_timeout", default: "3m", min: .seconds(1), max: .seconds(3600),
        help: "Idle time allowed between chunks of DATA (slow clients get 421 4.4.2).")
    static let maxDataTime = ConfigKey.duration(
        "ingress.max_data_time", default: "30m", min: .seconds(1), max: .seconds(86400),
        help: "The whole DATA phase must end within this, however steadily the client trickles (then 421 4.4.2).")
    static let maxConnections = ConfigKey<Int>.int(
        "ingress.max_connections", default: 1000, range: 1...1_000_000,
        help: "Simultaneous connections (R3) of every ingress in ingress.connection_limit_scope; more get 421 4.7.0 and are closed.")
    static let connectionLimitScope = ConfigKey<String>.choice(
        "ingress.connection_limit_scope", default: "site", choices: ConnectionCensus.Scope.allCases.map(\.rawValue),
        help: "Whose connections ingress.max_connections and ingress.max_connections_per_ip count: this process, every ingress of the site, or of all sites (shared through Redis each second; a dead process's count lapses within 5 s).")
    static let maxConnectionsPerIP = ConfigKey<Int>.int(
        "ingress.max_connections_per_ip", default: 50, range: 1...1_000_000,
        help: "Simultaneous connections from one client IP (R3); more get 421 4.7.0.")
    static let maxPending = ConfigKey<Int>.int(
        "ingress.max_pending", default: 100_000, range: 1...100_000_000,
        help: "Backpressure: while more messages than this wait in all stages together (accepted, scanned, classified, outbound good and bad), MAIL gets 451 4.3.2.")
    static let maxRedisMemoryFraction = ConfigKey<Double>.number(
        "ingress.max_redis_memory_fraction", default: "0.85", range: 0.05...1.0,
        help: "Backpressure: while Redis uses more than this fraction of its maxmemory (INFO memory, sampled every 250 ms), MAIL gets 451 4.3.2; with maxmemory 0 only ingress.max_pending applies.")
    static let maxInflightBytes = ConfigKey<Int>.size(
        "ingress.max_inflight_bytes", default: "512M", range: 65536...(1 << 40),
        help: "Bytes of DATA all sessions of this process may buffer together; a transaction beyond it gets 452 4.3.1 (at DATA if its SIZE says so, else at the final dot) and the session stays usable.")
    static let allowNetworks = ConfigKey<NetworkList>(
        "ingress.allow_networks", default: "127.0.0.0/8,::1/128", kind: "list of CIDR networks",
        help: "Listener-wide allowlist: clients from other networks get 554 5.7.1 at connect.") { text in
        do { return .success(try NetworkList(parsing: text)) } catch { return .failure(ConfigProblem("\(error)")) }
    }
    static let checkSenderDomain = ConfigKey<Bool>.bool(
        "ingress.check_sender_domain", default: true,
        help: "R5: the sender's domain must have MX or A/AAAA leading to a public address (else 550 5.7.1 Sender Domain must resolve).")
    static let allowNonPublicSenderDomains = ConfigKey<Bool>.bool(
        "ingress.allow_nonpublic_sender_domains", default: false,
        help: "Let sender domains whose addresses are all private, loopback or reserved pass ingress.check_sender_domain (the local run and the tests).")
    static let dsn = ConfigKey<Bool>.bool(
        "ingress.dsn", default: true,
        help: "Offer DSN (RFC 3461): NOTIFY, RET, ENVID, ORCPT are accepted, honoured by egress and passed on to next hops that offer DSN.")
    static let authFailuresPerIP = ConfigKey<Int>.int(
        "ingress.auth_failures_per_ip", default: 10, range: 1...100_000,
        help: "Failed logins from one IP within auth_failure_window before AUTH is refused (454 4.7.0).")
    static let authFailuresPerLogin = ConfigKey<Int>.int(
        "ingress.auth_failures_per_login", default: 20, range: 1...100_000,
        help: "Failed logins for one username within auth_failure_window before AUTH is refused.")
    static let authFailureWindow = ConfigKey.duration(
        "ingress.auth_failure_window", default: "10m", min: .seconds(1), max: .seconds(86400),
        help: "How long failed logins count.")
    static let stripHeaders = ConfigKey<String>.string(
        "ingress.strip_headers", default: "X-Originating-IP,X-Forwarded-For,X-Real-IP,X-Client-IP,X-Sender-IP",
        help: "Header fields removed from submitted mail (R8: they reveal the customer's addresses).")
    static let stripReceived = ConfigKey<Bool>.bool(
        "ingress.strip_received", default: true,
        help: "Remove the customer's own Received headers (R8: internal hosts and IPs); ours is added without the client IP. Earlier Received headers of smg-ingress itself stay, so a loop through the gateway is counted.")
    static let bareNewline = ConfigKey<String>.choice(
        "ingress.bare_newline", default: "normalize", choices: ["normalize", "reject"],
        help: "Bare LF line ends in message data (Postfix 3.9 smtpd_forbid_bare_newline): normalize = store them as CRLF, reject = 554 5.5.2. Only CRLF.CRLF ends DATA either way; bare CR is always refused. Per customer: smgctl customer add --bare-newline.")
    static let maxReceived = ConfigKey<Int>.int(
        "ingress.max_received", default: 50, range: 1...1000,
        help: "Refuse at the end of DATA (554 5.4.6) a message that already has this many Received headers, counted before stripping: a mail loop (Postfix's hopcount_limit).")
    static let receivedShowsClient = ConfigKey<Bool>.bool(
        "ingress.received_shows_client_ip", default: false,
        help: "Put the client's HELO name and IP into our Received header (R8: off, they reveal the customer's hosts).")

    static let all: [AnyConfigKey] = [
        listen.erased, implicitTLSListen.erased, hostname.erased, tlsCertificate.erased, tlsKey.erased,
        requireAuth.erased, allowPlaintextAuth.erased, maxMessageSize.erased, maxRecipients.erased, maxCommands.erased,
        maxErrors.erased, commandTimeout.erased, dataTimeout.erased, maxDataTime.erased, maxConnections.erased, maxConnectionsPerIP.erased, connectionLimitScope.erased,
        maxPending.erased, maxRedisMemoryFraction.erased, maxInflightBytes.erased, allowNetworks.erased, checkSenderDomain.erased, allowNonPublicSenderDomains.erased, dsn.erased, authFailuresPerIP.erased,
        authFailuresPerLogin.erased, authFailureWindow.erased, stripHeaders.erased, stripReceived.erased,
        maxReceived.erased, bareNewline.erased, receivedShowsClient.erased, StageKeys.redriveAfter.erased,
    ] + [dedupeWindow.erased] + DNSKeys.all

    static let dedupeWindow = ConfigKey.duration(
        "ingress.dedupe_window", default: "10m", min: .zero, max: .seconds(86400),
        help: "A submission identical to one accepted within this time (same login, envelope and content) is answered 250 with the first one's id and not stored again: the client is retrying a transaction whose 250 it never saw. 0 = off.")
}
