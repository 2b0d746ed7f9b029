import AllotConfig
import AllotCore
import AllotRateLimit
import AllotTransport
import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

struct RateLimitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ratelimit-service",
        abstract: "Run Envoy's rate-limit service (gRPC ShouldRateLimit) beside a proxy, answered from this node's leases.",
        discussion: """
            Rules are envoyproxy/ratelimit's own files (domain, descriptors, rate_limit); the coordinators \
            must be given the same files (envoy_ratelimit: in their configuration). See docs/envoy.md.
            """)

    @Option(help: "This node's name (its certificate is node-<name>.pem).") var name: String
    @Option(name: .customLong("rules"), help: "An envoyproxy/ratelimit configuration file, or a directory of them (repeatable).")
    var rules: [String]
    @Option(help: "The coordinators: HOST:PORT[,HOST:PORT...].") var coordinator: String
    @Option(help: "A deployment file whose tls and lease sections to use (optional).") var config: String?
    @Option(help: "Directory of the TLS material (overrides the file's tls.dir).") var tlsDir: String?
    @Option(help: "HOST:PORT for the gRPC listener (plaintext HTTP/2: keep it on loopback or in the pod).") var listen = "127.0.0.1:8081"
    @Option(help: "The longest a request waits for a lease being asked for, in milliseconds (keep it under Envoy's timeout, 20 ms by default).") var waitMs: Int64 = 10
    @Option(help: "The most budgets (distinct limited descriptors) this node keeps; past it a new one is over the limit.") var maxBudgets = 10_000
    @Flag(help: "Leave out the x-ratelimit-* headers (when Envoy's filter writes them itself: enable_x_ratelimit_headers).") var noResponseHeaders = false
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: Logger.Level = .info
    @Option(help: "Log lines as text or json (one JSON object per line: time, level, label, message, metadata).") var logFormat: LogFormat = .text

    func validate() throws {
        guard !rules.isEmpty else { throw ValidationError("name at least one rules file or directory (--rules)") }
        guard (0...10_000).contains(waitMs) else { throw ValidationError("--wait-ms must be between 0 and 10000") }
        guard (1...10_000_000).contains(maxBudgets) else { throw ValidationError("--max-budgets must be between 1 and 10000000") }
    }

    func run() async throws {
        logFormat.bootstrap()
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        let deployment = try config.map { path -> DeploymentConfig in
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            return try DeploymentConfig(yaml: String(decoding: data, as: UTF8.self), requirePolicy: false)
        } ?? DeploymentConfig()
        let ruleSet = try RateLimitRulesFile.load(rules)
        let seeds = coordinator.split(separator: ",").map(String.init)
        for (i, s) in seeds.enumerated() { _ = try ConfigFields.address(s, field: "--coordinator[\(i)]") }
        let (host, port) = try ConfigFields.address(listen, field: "--listen")
        var logger = Logger(label: "allot.ratelimit")
        logger.logLevel = logLevel
        let dir = URL(fileURLWithPath: tlsDir ?? deployment.tlsDirectory), node = name, domain = deployment.trustDomain
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: node, trustDomain: domain) }
        var settings = RateLimitCore.Settings()
        settings.wait = .milliseconds(waitMs)
        settings.maxBudgets = maxBudgets
        settings.responseHeaders = !noResponseHeaders
        let sidecar = try RateLimitSidecar(name: name, rules: ruleSet, seeds: seeds,
                                           dial: TLSLeaseTransport.dialer(tls: tls, group: MultiThreadedEventLoopGroup.singleton),
                                           lease: deployment.allocator, settings: settings, logger: logger)
        let domains = ruleSet.domains.keys.sorted().joined(separator: ", ")
        let service = SidecarService(sidecar: sidecar, host: host, port: port) { bound in
            FileHandle.standardOutput.write(Data("allot ratelimit-service \(node) listening on \(host):\(bound) (gRPC), domains: \(domains)\n".utf8))
        }
        // SIGTERM: stop answering, give every lease back.
        try await ServiceGroup(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
    }
}

struct SidecarService: Service {
    let sidecar: RateLimitSidecar
    let host: String
    let port: Int
    let onListening: @Sendable (Int) -> Void

    func run() async throws {
        try await cancelWhenGracefulShutdown { try await sidecar.run(host: host, port: port, onListening: onListening) }
    }
}
