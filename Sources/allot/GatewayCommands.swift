import AllotDemo
import AllotConfig
import AllotCoordinator
import AllotCore
import AllotGateway
import AllotTelemetry
import AllotTransport
import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run a gateway node: an OpenAI-compatible proxy that charges every request to its budgets before the model is called.",
        discussion: "SIGHUP reloads the consumers file; SIGTERM stops taking requests, lets those in flight settle, and releases every lease.")

    @Option(help: "The deployment's YAML file (gateway, models, tiers; see docs/operations.md).") var config: String
    @Option(help: "Override gateway.name (the node certificate is node-<name>.pem).") var name: String?
    @Option(help: "Override gateway.listen (HOST:PORT).") var listen: String?
    @Option(help: "Override gateway.admin (HOST:PORT).") var admin: String?
    @Option(help: "Override gateway.metrics (HOST:PORT): a listener with /metrics and the probes only.") var metrics: String?
    @Option(help: "Override gateway.upstream (URL).") var upstream: String?
    @Option(help: "Override gateway.coordinator (HOST:PORT).") var coordinator: String?
    @Flag(help: "One log line per request (request id, traceparent, method, path, status, latency).") var accessLog = false
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: Logger.Level = .info
    @Option(help: "Log lines as text or json (one JSON object per line: time, level, label, message, metadata).") var logFormat: LogFormat = .text
    @OptionGroup var telemetry: TelemetryOptions

    func run() async throws {
        logFormat.bootstrap()
        // Swift concurrency's jobs run on NIO's event loops: no thread hop between the
        // HTTP handlers, the upstream client and the sockets (measured: docs/performance.md).
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        var cfg = try GatewayConfig.load(path: config)
        if let name { cfg.name = name }
        cfg.accessLog = accessLog
        if let listen { (cfg.listenHost, cfg.listenPort) = try ConfigFields.address(listen, field: "--listen") }
        if let admin { (cfg.adminHost, cfg.adminPort) = try ConfigFields.address(admin, field: "--admin") }
        if let metrics { cfg.metricsAddress = try ConfigFields.address(metrics, field: "--metrics") }
        if let coordinator {
            let list = coordinator.split(separator: ",").map(String.init)
            (cfg.coordinatorHost, cfg.coordinatorPort) = try ConfigFields.address(list[0], field: "--coordinator")
            cfg.seeds = list.count > 1 ? list : []
        }
        if let upstream {
            guard let u = URL(string: upstream), u.scheme == "http" || u.scheme == "https" else {
                throw ValidationError("--upstream must be an http(s) URL (got '\(upstream)')")
            }
            cfg.upstream = u
        }
        let tiers = Set(cfg.shared.tiers.map(\.name))
        let consumersPath = cfg.consumersFile
        let consumers = try ConsumerDirectory.load(path: consumersPath, tiers: tiers)
        var logger = Logger(label: "allot.gateway")
        logger.logLevel = logLevel
        let dir = URL(fileURLWithPath: cfg.shared.tlsDirectory), nodeName = cfg.name, domain = cfg.shared.trustDomain
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: nodeName, trustDomain: domain) }
        let dial = TLSLeaseTransport.dialer(tls: tls, group: MultiThreadedEventLoopGroup.singleton)
        let (host, adminHost, upstreamURL) = (cfg.listenHost, cfg.adminHost, cfg.upstream.absoluteString)
        let tracing = try telemetry.tracer(serviceName: "allot-gateway", logger: logger)
        let service = try GatewayService(config: cfg, consumers: consumers, seeds: cfg.coordinatorSeeds, dial: dial, logger: logger,
                                         onListening: { p, a in
            let line = "allot gateway \(nodeName) listening on \(host):\(p), admin and sidecar http://\(adminHost):\(a), upstream \(upstreamURL)\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }, tracer: tracing?.tracer)
        // Library metrics (swift-metrics: Hummingbird's request counts) are scraped beside ours.
        Telemetry.bootstrapMetrics(into: service.core.metrics.registry)
        let reloader = HangupReloader { [logger, core = service.core] in
            do {
                let fresh = try ConsumerDirectory.load(path: consumersPath, tiers: tiers)
                core.reload(consumers: fresh)
                try tls.reload()
                logger.info("reloaded the consumers file (\(fresh.count) keys) and TLS certificates")
            } catch {
                logger.error("reload failed; keeping the previous consumers and certificates", metadata: ["allot.error": "\(error)"])
            }
        }
        let group = ServiceGroup(services: (tracing.map { [$0.service] } ?? []) + service.services() + [reloader],
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}

struct MockUpstreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-upstream",
        abstract: "Serve an OpenAI-compatible mock (chat completions, streaming or not) with deterministic usage, for tests and benchmarks.",
        discussion: "Prompt tokens = ceil(body bytes / 4); completion tokens = --completion-tokens capped by max_tokens. Per request: x-mock-completion-tokens, x-mock-latency-ms, x-mock-chunk-ms, x-mock-fault: hang|cut|error|no-usage.")

    @Option(help: "HOST:PORT to listen on.") var listen = "127.0.0.1:9000"
    @Option(help: "Completion tokens per answer.") var completionTokens: Int64 = 64
    @Option(help: "Latency before answering, in milliseconds.") var latencyMs: Int64 = 0
    @Option(help: "Pause between stream events, in milliseconds.") var chunkMs: Int64 = 2

    func validate() throws {
        guard completionTokens >= 0, latencyMs >= 0, chunkMs >= 0 else { throw ValidationError("token counts and times must be 0 or more") }
    }

    func run() async throws {
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        var s = MockUpstream.Settings()
        (s.host, s.port) = try ConfigFields.address(listen, field: "--listen")
        s.completionTokens = completionTokens
        s.latency = .milliseconds(latencyMs)
        s.chunkInterval = .milliseconds(chunkMs)
        let host = s.host
        let mock = MockUpstream(settings: s) { port in
            FileHandle.standardOutput.write(Data("allot mock-upstream listening on http://\(host):\(port)\n".utf8))
        }
        let group = ServiceGroup(services: [mock], gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "allot.mock"))
        try await group.run()
    }
}

struct HashKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-key",
        abstract: "Print the SHA-256 of an API key, as the consumers file stores it (key_sha256).")
    @Argument(help: "The API key (or - to read one line from standard input).") var key: String

    func run() throws {
        let k = key == "-" ? (readLine() ?? "") : key
        guard !k.isEmpty else { throw ValidationError("the key is empty") }
        print(ConsumerDirectory.hash(k))
    }
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole system in this process: a coordinator, three gateway nodes and a mock upstream over mutual TLS on loopback, under a mixed workload.",
        discussion: "Prints a live table and a summary per consumer and budget, writes an HTML report, and exits non-zero if any cap was exceeded.")

    @Option(help: "Seconds of workload.") var duration = 20
    @Option(help: "Gateway nodes.") var nodes = 3
    @Option(help: "Where to write the HTML report.") var report = "allot-demo-report.html"
    @Flag(help: "No live table (only the summary).") var quiet = false

    func validate() throws {
        guard (1...600).contains(duration) else { throw ValidationError("--duration must be between 1 and 600 seconds (got \(duration))") }
        guard (1...16).contains(nodes) else { throw ValidationError("--nodes must be between 1 and 16 (got \(nodes))") }
    }

    func run() async throws {
        var o = DemoRunner.Options()
        o.duration = .seconds(duration)
        o.nodes = nodes
        o.report = report
        o.live = !quiet && isatty(STDOUT_FILENO) != 0
        let result = try await DemoRunner(options: o).run { line in
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
        if result.totalOvershoot > 0 {
            throw ValidationError("a cap was exceeded (total overshoot \(result.totalOvershoot)); see the summary")
        }
    }
}
