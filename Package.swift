// swift-tools-version:6.1
// Secure Mail Gateway: an event-sourced pipeline of small processes.
// Arrows run one way: Services → Shared; protocol modules sit below I/O modules;
// only the C… targets touch C, and each is imported by exactly one Swift module.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let nioHelpers: Target.Dependency = .product(name: "NIOConcurrencyHelpers", package: "swift-nio")
let nioSSL: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")
let cryptoExtras: Target.Dependency = .product(name: "_CryptoExtras", package: "swift-crypto")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

/// A service executable: a small main in Services/<dir> on top of the shared runtime.
func service(_ name: String, _ dir: String, _ extra: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name, dependencies: ["SMGRuntime", "SMGCore", argumentParser] + extra,
        path: "Services/\(dir)", exclude: ["README.md"], swiftSettings: strict)
}

let package = Package(
    name: "SecureMailGateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "smg-ingress", targets: ["smg-ingress"]),
        .executable(name: "smg-scanner", targets: ["smg-scanner"]),
        .executable(name: "smg-classifier", targets: ["smg-classifier"]),
        .executable(name: "smg-signer", targets: ["smg-signer"]),
        .executable(name: "smg-egress-good", targets: ["smg-egress-good"]),
        .executable(name: "smg-egress-bad", targets: ["smg-egress-bad"]),
        .executable(name: "smg-blacklist-monitor", targets: ["smg-blacklist-monitor"]),
        .executable(name: "smg-admin", targets: ["smg-admin"]),
        .executable(name: "smgctl", targets: ["smgctl"]),
        .executable(name: "smg-spam-bench", targets: ["smg-spam-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
    ],
    targets: [
        // C libraries, quarantined.
        .systemLibrary(name: "CHiredis", path: "Shared/CHiredis", pkgConfig: "hiredis",
                       providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CZeroMQ", path: "Shared/CZeroMQ", pkgConfig: "libzmq",
                       providers: [.apt(["libzmq3-dev"])]),

        .systemLibrary(name: "CClamAV", path: "Shared/CClamAV", pkgConfig: "libclamav",
                       providers: [.apt(["libclamav-dev"])]),
        .systemLibrary(name: "CYara", path: "Shared/CYara", pkgConfig: "yara", providers: [.apt(["libyara-dev"])]),
        .systemLibrary(name: "CZlib", path: "Shared/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CMemmem", path: "Shared/CMemmem"),

        // Shared modules, one concern each.
        .target(name: "SMGSync", path: "Shared/SMGSync", swiftSettings: strict),
        .target(name: "SMGCore", dependencies: ["SMGSync"], path: "Shared/SMGCore", swiftSettings: strict),
        .target(name: "SMGRedis",
                dependencies: ["CHiredis", "SMGSync", logging, nioCore, nioPosix, nioSSL,
                               .product(name: "NIOTLS", package: "swift-nio")],
                path: "Shared/SMGRedis", swiftSettings: strict),
        .target(name: "SMGBus", dependencies: ["CZeroMQ", "SMGCore", "SMGSync", logging], path: "Shared/SMGBus",
                swiftSettings: strict),
        .target(name: "SMGStore", dependencies: ["SMGCore", "SMGRedis", logging],
                path: "Shared/SMGStore", swiftSettings: strict),
        .target(name: "SMGDNS", dependencies: [nioCore, nioPosix, logging], path: "Shared/SMGDNS",
                exclude: ["README.md"], swiftSettings: strict),
        .target(name: "SMGAccounts", dependencies: ["SMGCore", "SMGStore", "SMGRedis", crypto, cryptoExtras],
                path: "Shared/SMGAccounts", swiftSettings: strict),
        .target(name: "SMGDKIM",
                dependencies: ["SMGMIME", logging, .product(name: "Crypto", package: "swift-crypto"),
                               .product(name: "_CryptoExtras", package: "swift-crypto")],
                path: "Shared/SMGDKIM", exclude: ["README.md"], swiftSettings: strict),
        .target(name: "SMGDKIMKeys",
                dependencies: ["SMGDKIM", "SMGDNS", "SMGRedis", "SMGStore", "SMGSync", .product(name: "Crypto", package: "swift-crypto")],
                path: "Shared/SMGDKIMKeys", exclude: ["README.md"], swiftSettings: strict),
        .target(name: "SMTPProtocol", dependencies: [nioCore], path: "Shared/SMTPProtocol",
                swiftSettings: strict),
        .target(name: "SMTPServer", dependencies: ["SMTPProtocol", nioCore, nioPosix, nioHelpers, nioSSL, logging],
                path: "Shared/SMTPServer", swiftSettings: strict),
        .target(name: "SMTPClient",
                dependencies: ["SMTPProtocol", "SMGCore", nioCore, nioPosix, nioHelpers, nioSSL, logging, crypto,
                               .product(name: "NIOTLS", package: "swift-nio"),
                               .product(name: "X509", package: "swift-certificates")],
                path: "Shared/SMTPClient", swiftSettings: strict),
        .target(name: "SMGConfig", dependencies: [.product(name: "Yams", package: "Yams")], path: "Shared/SMGConfig",
                swiftSettings: strict),
        .target(name: "SMGRuntime",
                dependencies: [
                    "SMGConfig", "SMGNDR", "SMGCore", "SMGStore", "SMGBus", "SMGRedis", "SMGSync", "SMGDNS", "SMTPProtocol", logging, lifecycle, nioCore, nioPosix, argumentParser,
                    .product(name: "NIOHTTP1", package: "swift-nio"),
                    .product(name: "Metrics", package: "swift-metrics"),
                    .product(name: "Prometheus", package: "swift-prometheus"),
                ],
                path: "Shared/SMGRuntime", swiftSettings: strict),
        .target(name: "SMGMIME", path: "Shared/SMGMIME", swiftSettings: strict),
        .target(name: "SMGClamAV", dependencies: ["CClamAV", "SMGSync", logging], path: "Shared/SMGClamAV",
                swiftSettings: strict),
        .target(name: "SMGYara", dependencies: ["CYara", "SMGSync", logging], path: "Shared/SMGYara",
                swiftSettings: strict),
        .target(name: "SMGVirusScan", dependencies: ["SMGClamAV", "SMGYara", "SMGMIME", logging],
                path: "Shared/SMGVirusScan", swiftSettings: strict),
        .target(name: "SMGNDR", dependencies: ["SMGConfig", "SMGCore", "SMGStore", "SMGMIME", logging],
                path: "Shared/SMGNDR", swiftSettings: strict),
        .target(name: "SMGSpam",
                dependencies: ["SMGMIME", "SMGCore", "SMGRedis", "SMGStore", "CMemmem", crypto, logging,
                               .product(name: "AsyncHTTPClient", package: "async-http-client"), nioCore],
                path: "Shared/SMGSpam", swiftSettings: strict),
        .target(name: "SMGTLSPolicy",
                dependencies: ["SMGCore", "SMGDNS", "SMGRedis", "SMGStore", "SMGNDR", "SMGSync", "SMTPClient", "CZlib", logging, nioCore, nioSSL, crypto,
                               .product(name: "AsyncHTTPClient", package: "async-http-client")],
                path: "Shared/SMGTLSPolicy", exclude: ["README.md"], swiftSettings: strict),
        .target(name: "SMGBlacklist", dependencies: ["SMGCore", "SMGDNS", "SMGRedis", "SMGStore", "SMGNDR", logging],
                path: "Shared/SMGBlacklist", exclude: ["README.md"], swiftSettings: strict),
        .target(name: "SMGAdmin", dependencies: ["SMGCore", "SMGRedis", "SMGStore", "SMGAccounts", crypto],
                path: "Shared/SMGAdmin", swiftSettings: strict),
        .target(name: "SMGDelivery",
                dependencies: ["SMGCore", "SMGRuntime", "SMGStore", "SMGNDR", "SMGAccounts", "SMTPClient", "SMTPProtocol",
                               "SMGTLSPolicy", "SMGDNS", "SMGRedis", logging, lifecycle, nioCore, nioPosix,
                               .product(name: "Metrics", package: "swift-metrics")],
                path: "Shared/SMGDelivery", swiftSettings: strict),

        // Services: small mains.
        service("smg-ingress", "ingress", ["SMGSync", "SMGAccounts", "SMGDNS", "SMGDKIM", "SMGMIME", nioSSL, crypto, "SMTPServer", "SMTPProtocol", "SMGStore", "SMGBus", nioCore, nioPosix]),
        service("smg-scanner", "scanner", ["SMGStore", "SMGNDR", "SMTPProtocol", "SMGVirusScan", "SMGClamAV", "SMGYara", "SMGMIME",
                                           lifecycle, .product(name: "Metrics", package: "swift-metrics")]),
        service("smg-classifier", "classifier", ["SMGSpam", "SMGAccounts", "SMGStore", "SMGNDR", "SMGRedis", lifecycle,
                                                 .product(name: "Metrics", package: "swift-metrics")]),
        service("smg-signer", "signer", ["SMGDKIM", "SMGDKIMKeys", "SMGStore"]),
        service("smg-egress-good", "egress-good", ["SMGDelivery", "SMGNDR", "SMGAccounts"]),
        service("smg-egress-bad", "egress-bad", ["SMGDelivery", "SMGNDR", "SMGAccounts"]),
        service("smg-blacklist-monitor", "blacklist-monitor", ["SMGBlacklist", "SMGDNS", "SMGNDR", lifecycle,
                                                               .product(name: "Metrics", package: "swift-metrics")]),
        .executableTarget(
            name: "smg-admin",
            dependencies: ["SMGRuntime", "SMGCore", argumentParser, "SMGAdmin", "SMGAccounts", "SMGStore", "SMGRedis", "SMGBus",
                           "SMGTLSPolicy", "SMGDKIM", "SMGDKIMKeys", "SMGDNS", "SMGBlacklist", "SMGNDR", nioCore, nioSSL, logging, lifecycle,
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HummingbirdTLS", package: "hummingbird")],
            path: "Services/admin", exclude: ["README.md", "openapi.yaml"], swiftSettings: strict),
        service("smgctl", "smgctl", ["SMGAdmin", "SMGBlacklist", "SMGStore", "SMGNDR", "SMGBus", "SMGRedis", "SMGAccounts", "SMGDKIM", "SMGDKIMKeys", "SMGDNS",
                                     "SMGSpam", "SMGMIME", "SMGTLSPolicy", "SMTPClient", nioSSL, crypto]),

        // Benchmarks (run with -c release; see bench/README.md).
        .executableTarget(name: "smg-dns-bench", dependencies: ["SMGDNS", logging], path: "bench/dns",
                          swiftSettings: strict),
        .executableTarget(name: "smg-dkim-bench", dependencies: ["SMGDKIM"], path: "bench/dkim", exclude: ["run.sh"],
                          swiftSettings: strict),

        .executableTarget(name: "smg-delivery-bench",
                          dependencies: ["SMTPClient", "SMTPServer", "SMTPProtocol", nioCore, nioPosix, nioSSL, logging],
                          path: "bench/delivery", swiftSettings: strict),
        .executableTarget(name: "smg-spam-bench", dependencies: ["SMGSpam"], path: "bench/spam",
                          swiftSettings: strict),
        .executableTarget(name: "smg-redis-bench", dependencies: ["SMGRedis", logging], path: "bench/redis",
                          exclude: ["run.sh"], swiftSettings: strict),
        .executableTarget(name: "smg-scanner-bench",
                          dependencies: ["SMGVirusScan", "SMGClamAV", "SMGYara", "SMGMIME", logging],
                          path: "bench/scanner", swiftSettings: strict),

        // Tests.
        .target(name: "SMGTestSupport", dependencies: ["SMGRedis"], path: "Tests/SMGTestSupport", swiftSettings: strict),
        .target(name: "SMGTestSupportDNS", path: "Tests/SMGTestSupportDNS", swiftSettings: strict),
        .testTarget(name: "SMGDNSTests", dependencies: ["SMGDNS", "SMGTestSupportDNS", nioCore, nioPosix, nioHelpers, logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGAccountsTests",
                    dependencies: ["SMGAccounts", "SMGCore", "SMGRedis", "SMGStore", "SMGTestSupport", logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGDKIMTests", dependencies: ["SMGDKIM", "SMGDKIMKeys", "SMGRedis", "SMGStore", "SMGTestSupport", logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGCoreTests", dependencies: ["SMGCore"], swiftSettings: strict),
        .testTarget(name: "SMGRedisTests", dependencies: ["SMGRedis", "SMGTestSupport", logging, nioCore, nioPosix],
                    swiftSettings: strict),
        .testTarget(name: "SMGBusTests", dependencies: ["SMGBus", "SMGTestSupport", logging], swiftSettings: strict),
        .testTarget(name: "SMGStoreTests", dependencies: ["SMGStore", "SMGCore", "SMGRedis", "SMGTestSupport", logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGRuntimeTests", dependencies: ["SMGRuntime", "SMGConfig", "SMGCore"], swiftSettings: strict),
        .testTarget(name: "SMTPProtocolTests", dependencies: ["SMTPProtocol", nioCore], swiftSettings: strict),
        .testTarget(name: "SMTPServerTests",
                    dependencies: ["SMTPServer", "SMTPProtocol", nioCore, nioPosix, nioHelpers, logging,
                                   .product(name: "NIOEmbedded", package: "swift-nio")],
                    swiftSettings: strict),
        .testTarget(name: "SMTPClientTests",
                    dependencies: ["SMTPClient", "SMTPServer", "SMTPProtocol", nioCore, nioPosix, nioHelpers, nioSSL, logging],
                    exclude: ["aiosmtpd_sink.py"], swiftSettings: strict),
        .testTarget(name: "SMGMIMETests", dependencies: ["SMGMIME"], swiftSettings: strict),
        .testTarget(name: "SMGVirusScanTests", dependencies: ["SMGVirusScan", "SMGClamAV", "SMGYara", "SMGMIME", "SMGSync", logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGNDRTests", dependencies: ["SMGNDR", "SMGMIME", "SMGCore", "SMGStore"], swiftSettings: strict),
        .testTarget(name: "SMGSpamTests", dependencies: ["SMGSpam", "SMGRedis", "SMGStore", "SMGTestSupport"],
                    swiftSettings: strict),
        .testTarget(name: "SMGDeliveryTests", dependencies: ["SMGDelivery", "SMGNDR", "SMGCore", "SMTPProtocol"],
                    swiftSettings: strict),
        .testTarget(name: "SMGBlacklistTests", dependencies: ["SMGBlacklist", "SMGDNS", "SMGCore", "SMGStore", "SMGRedis", "SMGTestSupport",
                                                             "SMGTestSupportDNS", logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGAdminTests", dependencies: ["SMGAdmin", "SMGAccounts", "SMGStore", "SMGRedis", "SMGTestSupport", logging],
                    swiftSettings: strict),
        .testTarget(name: "SMGTLSPolicyTests",
                    dependencies: ["SMGTLSPolicy", "SMTPClient", "SMGCore", "SMGDNS", "SMGTestSupport", "SMGTestSupportDNS", nioSSL, crypto],
                    swiftSettings: strict),
    ]
)
