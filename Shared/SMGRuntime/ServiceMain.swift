public import ArgumentParser
import Foundation

/// The command line every service shares: `--config FILE`, `--print-config`, `--check-config`.
public struct ServiceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "A YAML configuration file; repeat it to merge several in order (e.g. the site's file, then the service's): a later file's key wins, and SMG_* environment variables override all.",
        valueName: "file"))
    public var config: [String] = []

    @Flag(name: .long, help: "Print every configuration key with its default and meaning, then exit.")
    public var printConfig = false

    @Flag(name: .long, help: "Load and validate the configuration, print the effective values, then exit.")
    public var checkConfig = false

    public init() {}
}

public enum ServiceMain {
    /// Parses the shared options, handles --print-config/--check-config, bootstraps the process and
    /// hands it to `body`. A configuration error is printed naming the key and exits with 78 (EX_CONFIG),
    /// so supervisors do not restart a process in a loop that can never start.
    /// `check` validates what single keys cannot (keys that only make sense together); it runs
    /// for `--check-config` as well, so a config that would stop the service fails the check too.
    public static func run(program: String, keys: [AnyConfigKey], check: ((Config) throws -> Void)? = nil,
                           body: (GatewayProcess) async throws -> Void) async {
        let options: ServiceOptions
        do { options = try ServiceOptions.parse() } catch { ServiceOptions.exit(withError: error) }
        if options.printConfig {
            print(Config.describe(CommonKeys.all + keys), terminator: "")
            return
        }
        do {
            if options.checkConfig {
                let config = try Config(files: options.config, keys: CommonKeys.all + keys)
                try GatewayProcess.checkCommonKeys(config)
                try check?(config)
                // Redacted: secret keys and passwords in URLs show as ***.
                for (k, v) in config.effective().sorted(by: { $0.key < $1.key }) { print("\(k) = \(v)") }
                return
            }
            let process = try GatewayProcess.bootstrap(program: program, configFiles: options.config, keys: keys)
            try await body(process)
        } catch let error as ConfigError {
            FileHandle.standardError.write(Data("\(program): \(error)\n".utf8))
            exit(78)
        } catch {
            FileHandle.standardError.write(Data("\(program): fatal: \(Config.redact("\(error)"))\n".utf8))
            exit(1)
        }
    }
}
