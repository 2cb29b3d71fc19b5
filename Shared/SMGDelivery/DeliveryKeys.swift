public import SMGRuntime

/// Configuration keys of the delivery engine (good and bad egress share them; each runs with
/// its own file: its own source addresses, HELO names and topic).
public enum DeliveryKeys {
    public static let heloName = ConfigKey<String>.string(
        "egress.helo_name", default: "localhost",
        help: "Name said in EHLO when egress.pool is empty (must match the source IP's PTR in production).")
    public static let sourceAddress = ConfigKey<String>.string(
        "egress.source_address", default: "",
        help: "Local IP to send from when egress.pool is empty; empty = the kernel's choice.")
    public static let pool = ConfigMapKey(
        "egress.pool",
        help: "Source addresses of this lane → the HELO name of each (its PTR), used in rotation; `smgctl pool drain ADDRESS` takes one out (R17).")
    public static let routes = ConfigMapKey(
        "egress.routes", help: "Static next hops: domain (or .parent, or *) → host:port; they win over MX (like Postfix transport maps).")
    public static let defaultPort = ConfigKey<Int>.int(
        "egress.port", default: 25, range: 1...65535, help: "Port of MX hosts and of static routes that name none.")
    public static let retrySchedule = ConfigKey<[Duration]>.durations(
        "egress.retry_schedule", default: "1m,5m,15m,30m,1h,2h,4h",
        help: "Waits between delivery attempts of a deferred recipient; the last one repeats.")
    public static let maxLifetime = ConfigKey.duration(
        "egress.max_lifetime", default: "5d", min: .seconds(1), max: .seconds(30 * 86400),
        help: "A recipient still deferred this long after acceptance is bounced.")
    public static let delayWarning = ConfigKey.duration(
        "egress.delay_warning_after", default: "0s", min: .seconds(0), max: .seconds(30 * 86400),
        help: "Send the sender one \"still trying\" notice for recipients deferred this long (0 = never, like Postfix's delay_warning_time).")
    public static let lease = ConfigKey.duration(
        "egress.lease", default: "60s", min: .seconds(3), max: .seconds(86400),
        help: "How long a message stays owned by an egress without a renewal (renewed every third of it while SMTP sessions run; confirmed before every DATA); a killed or stalled egress's messages are taken over after it.")
    public static let connectTimeout = ConfigKey.duration(
        "egress.connect_timeout", default: "30s", min: .milliseconds(100), max: .seconds(600), help: "TCP connect timeout.")
    public static let commandTimeout = ConfigKey.duration(
        "egress.command_timeout", default: "5m", min: .milliseconds(100), max: .seconds(3600),
        help: "Wait for the greeting and each reply to EHLO, MAIL, RCPT (RFC 5321 §4.5.3.2: 5 minutes).")
    public static let dataTimeout = ConfigKey.duration(
        "egress.data_timeout", default: "10m", min: .milliseconds(100), max: .seconds(3600),
        help: "Wait for the reply to the end of DATA (RFC 5321: 10 minutes).")
    public static let tls = ConfigKey<String>.choice(
        "egress.tls", default: "may", choices: ["may", "none"],
        help: "may = STARTTLS whenever offered, certificate verified and recorded, delivered either way, a failed handshake retried once in plaintext (R13); none = never.")
    public static let tlsCAFile = ConfigKey<String>.string(
        "egress.tls_ca_file", default: "", help: "PEM file of trust anchors added to the system's (a private CA).")
    public static let allowNonPublic = ConfigKey<Bool>.bool(
        "egress.allow_nonpublic_destinations", default: false,
        help: "Deliver to MX hosts on loopback, private or reserved addresses (the local run and tests). Static routes are always allowed.")
    public static let addressPreference = ConfigKey<String>.choice(
        "egress.address_preference", default: "ipv4", choices: ["ipv4", "ipv6", "any"],
        help: "Which address family of an MX host is tried first.")
    public static let addressFamilies = ConfigKey<String>.choice(
        "egress.address_families", default: "both", choices: ["both", "ipv4", "ipv6"],
        help: "Which address families are used at all.")
    public static let mxAddressLimit = ConfigKey<Int>.int(
        "egress.mx_address_limit", default: 5, range: 1...50,
        help: "Addresses (over all MX hosts) tried per delivery attempt (Postfix smtp_mx_address_limit).")
    public static let mxSessionLimit = ConfigKey<Int>.int(
        "egress.mx_session_limit", default: 2, range: 1...20,
        help: "SMTP sessions (greeting reached) per delivery attempt before the rest waits for the next attempt (Postfix smtp_mx_session_limit).")
    public static let localNames = ConfigKey<String>.string(
        "egress.local_names", default: "",
        help: "Comma-separated host names of this gateway besides the pool's HELO names: an MX that is one of them is a mail loop.")
    public static let localAddresses = ConfigKey<String>.string(
        "egress.local_addresses", default: "",
        help: "Comma-separated IPs of this gateway besides the pool's: an MX resolving to one of them is a mail loop.")
    public static let maxReceived = ConfigKey<Int>.int(
        "egress.max_received", default: 50, range: 5...1000,
        help: "A message with more Received headers is bounced as a mail loop (5.4.6; Postfix hopcount_limit).")
    public static let destinationConcurrency = ConfigKey<Int>.int(
        "egress.destination_concurrency", default: 20, range: 1...1000,
        help: "Parallel SMTP sessions per destination (recipient domain or static next hop) from one egress process.")
    public static let destinationRate = ConfigMapKey(
        "egress.destination_rate", help: "Domain → most messages per minute from one egress process (for the big providers).")
    public static let reuseLimit = ConfigKey<Int>.int(
        "egress.connection_reuse_limit", default: 100, range: 1...100_000,
        help: "Messages sent over one connection before it is closed.")
    public static let idleTimeout = ConfigKey.duration(
        "egress.connection_idle_timeout", default: "5s", min: .seconds(0), max: .seconds(300),
        help: "How long an idle connection is kept for the next message to the same destination (0 = no reuse).")

    // Outbound TLS policy (R14–R16, issue 13).
    public static let dane = ConfigKey<Bool>.bool(
        "egress.dane", default: true,
        help: "Use DANE (RFC 7672) where the MX and its TLSA records are DNSSEC-validated; needs dns.trusted with a validating resolver.")
    public static let mtaSTS = ConfigKey<Bool>.bool(
        "egress.mta_sts", default: true, help: "Use MTA-STS policies (RFC 8461), fetched over HTTPS and cached in Redis.")
    public static let mtaSTSPort = ConfigKey<Int>.int(
        "egress.mta_sts_port", default: 443, range: 1...65535,
        help: "HTTPS port of mta-sts.<domain> policy hosts (443; another port only for tests).")
    public static let mtaSTSTimeout = ConfigKey.duration(
        "egress.mta_sts_timeout", default: "20s", min: .seconds(1), max: .seconds(120),
        help: "Time limit of one MTA-STS policy fetch (connect, TLS, answer).")
    public static let tlsProviderRules = ConfigKey<Bool>.bool(
        "egress.tls_provider_rules", default: true,
        help: "Always demand verified TLS (else hold) at the big providers' MX hosts (Microsoft 365, Outlook.com, Google, Yahoo, iCloud).")
    public static let tlsHoldRecheck = ConfigKey.duration(
        "egress.tls_hold_recheck", default: "15m", min: .seconds(1), max: .seconds(7 * 86400),
        help: "A message held because a forced TLS rule could not be met is tried again after this (an operator can release it sooner).")
    public static let tlsReports = ConfigKey<Bool>.bool(
        "egress.tls_reports", default: true,
        help: "Count TLS sessions per policy domain and send daily TLS-RPT reports (RFC 8460) to domains that ask for them (good lane).")
    public static let tlsReportOrganization = ConfigKey<String>.string(
        "egress.tls_report_organization", default: "Secure Mail Gateway", help: "organization-name of TLS-RPT reports.")
    public static let tlsReportSubmitter = ConfigKey<String>.string(
        "egress.tls_report_submitter", default: "",
        help: "The gateway's own domain in TLS-RPT reports (From, TLS-Report-Submitter); empty = ndr.domain.")

    public static let all: [AnyConfigKey] = [
        heloName.erased, sourceAddress.erased, pool.erased, routes.erased, defaultPort.erased, retrySchedule.erased,
        maxLifetime.erased, delayWarning.erased, lease.erased, connectTimeout.erased, commandTimeout.erased,
        dataTimeout.erased, tls.erased, tlsCAFile.erased, allowNonPublic.erased, addressPreference.erased,
        addressFamilies.erased, mxAddressLimit.erased, mxSessionLimit.erased, localNames.erased, localAddresses.erased,
        maxReceived.erased, destinationConcurrency.erased, destinationRate.erased, reuseLimit.erased, idleTimeout.erased,
        dane.erased, mtaSTS.erased, mtaSTSPort.erased, mtaSTSTimeout.erased, tlsProviderRules.erased, tlsHoldRecheck.erased,
        tlsReports.erased, tlsReportOrganization.erased, tlsReportSubmitter.erased,
    ] + DNSKeys.all
}
