import Foundation
import SMGCore
import SMGDKIM
import SMGDKIMKeys
import SMGRuntime
import SMGStore

/// smg-signer — the last stage that may change a message: it DKIM-signs it for its From domain
/// with every active key of that domain (R12) and routes it to `mail.outbound.good` or `.bad` by
/// the lane the classifier recorded (a missing or unknown lane → bad: spam must never leave
/// through good egress by accident). The signature header fields are committed as the message
/// field `dkim` in the same commit as the transition; egress puts them on top of the body.
enum SignerKeys {
    static let masterKeyFile = ConfigKey<String>.string(
        "dkim.master_key_file", default: "",
        help: "File with the 32-octet master key that decrypts DKIM private keys (mode 0600, `smgctl dkim init-master-key`); empty = sign nothing.")
    static let expire = ConfigKey.duration(
        "dkim.expire", default: "0s", min: .zero, max: .seconds(400 * 86400),
        help: "x= of each signature, after t= (0 = no x=).")
    static let keyCacheTTL = ConfigKey.duration(
        "dkim.key_cache_ttl", default: "30s", min: .zero, max: .seconds(3600),
        help: "How long a signer reuses a domain's keys read from Redis (a rotation takes effect within it).")
    static let canonicalization = ConfigKey<String>.string(
        "dkim.canonicalization", default: "relaxed/relaxed", help: "c= header/body: relaxed or simple each.",
        validate: { text in
            let parts = text.split(separator: "/").map(String.init)
            return parts.count == 2 && parts.allSatisfy { DKIMCanonicalization(rawValue: $0) != nil }
                ? nil : "expected relaxed/relaxed, simple/simple, relaxed/simple or simple/relaxed"
        })
    static let ownDomain = ConfigKey<String>.string(
        "dkim.own_domain", default: "",
        help: "Signing domain of the messages the gateway writes itself (NDRs, notices); set ndr.domain to it or a subdomain for DMARC alignment.")
    static let domainMap = ConfigMapKey(
        "dkim.domain_map", help: "From domain → signing domain (a customer's parent domain); `*.example.com` matches subdomains.")

    static let all: [AnyConfigKey] = [masterKeyFile.erased, expire.erased, keyCacheTTL.erased, canonicalization.erased,
                                      ownDomain.erased, domainMap.erased]
}

struct DKIMStage: StageWorker {
    let signer: DKIMMessageSigner?

    func process(_ message: StoredMessage, context: StageContext) async throws -> StageOutcome {
        let lane = message.fields["lane"].flatMap(Lane.init(rawValue:)) ?? .bad
        var facts: [String: JSONValue] = ["lane": .string(lane.rawValue)]
        var fields: [String: String] = [:]
        if let signer {
            // NDRs and notices: written by the gateway (null sender, no customer).
            let gatewayWritten = message.envelope.customer == nil && message.envelope.sender.isEmpty
            let result = try await signer.sign(message.body, time: Int(Date().timeIntervalSince1970),
                                               gatewayWritten: gatewayWritten)
            facts["signed"] = .bool(result.signed)
            if let domain = result.domain { facts["domain"] = .string(domain) }
            facts["selectors"] = .array(result.selectors.map { .string($0) })
            facts["algorithms"] = .array(result.algorithms.map { .string($0) })
            if let reason = result.reason { facts["reason"] = .string(reason) }
            fields[StoredMessage.dkimField] = result.headers
        } else {
            facts["signed"] = false
            facts["reason"] = "no master key configured (dkim.master_key_file)"
            fields[StoredMessage.dkimField] = ""
        }
        return StageOutcome(events: [context.event(EventType.signed, id: message.id, facts: facts)], fields: fields,
                            transition: .forward(topic: lane.topic,
                                                 redriveAfterMilliseconds: context.settings.redriveAfter.milliseconds))
    }
}

await ServiceMain.run(program: "smg-signer", keys: StageKeys.all + SignerKeys.all) { process in
    let settings = try StageSettings(name: "signer", inputTopic: Topic.classified,
                                     outputTopics: [Topic.outboundGood, Topic.outboundBad], config: process.config)
    let config = process.config
    var signer: DKIMMessageSigner? = nil
    let path = try config.get(SignerKeys.masterKeyFile)
    if !path.isEmpty {
        let master: DKIMMasterKey
        do { master = try DKIMMasterKey.load(path: path) } catch {
            throw ConfigError(key: SignerKeys.masterKeyFile.name, source: path, problem: "\(error)")
        }
        var options = DKIMSigningOptions()
        let canon = try config.get(SignerKeys.canonicalization).split(separator: "/").map(String.init)
        options.headerCanonicalization = DKIMCanonicalization(rawValue: canon[0]) ?? .relaxed
        options.bodyCanonicalization = DKIMCanonicalization(rawValue: canon[1]) ?? .relaxed
        let expire = try config.get(SignerKeys.expire).components.seconds
        options.expireAfterSeconds = expire > 0 ? Int(expire) : nil
        let own = try config.get(SignerKeys.ownDomain)
        let store = DKIMKeyStore(redis: process.store.redis, keys: process.store.keys, masterKey: master,
                                 cacheTTL: try config.get(SignerKeys.keyCacheTTL))
        signer = DKIMMessageSigner(store: store, signer: DKIMSigner(options: options),
                                   domainMap: config.get(SignerKeys.domainMap), ownDomain: own.isEmpty ? nil : own)
    } else {
        process.logger.warning("dkim.master_key_file is not set: messages leave unsigned")
    }
    try await process.run([try StageRunner(process: process, settings: settings, worker: DKIMStage(signer: signer))])
}
