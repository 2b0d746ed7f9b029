import AllotConfig
import AllotCoordinator
import AllotNode
import AllotTelemetry
import AllotCore
import AllotTesting
import AllotTransport
import ArgumentParser
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Serve leases over mutual TLS (SIGHUP reloads certificates, SIGTERM drains and exits).")

    @Option(help: "YAML configuration file (see docs/operations.md).") var config: String
    @Option(help: "Override coordinator.listen (HOST:PORT).") var listen: String?
    @Option(help: "Override coordinator.admin (HOST:PORT).") var admin: String?
    @Option(help: "Override coordinator.admin_api (HOST:PORT): the HTTPS admin API, admin certificates only.") var adminApi: String?
    @Option(help: "Override tls.dir.") var tlsDir: String?
    @Option(help: "Override coordinator.name (the certificate is coordinator-<name>.pem).") var name: String?
    @Option(help: "Override tls.trust_domain.") var trustDomain: String?
    @Option(help: "Override ledger: sqlite:PATH, postgres://USER@HOST:PORT/DATABASE or none.") var ledger: String?
    @Option(help: "Override cluster.seeds (comma-separated HOST:PORT; turns cluster mode on).") var seeds: String?
    @Option(help: "Override coordinator.advertise (HOST:PORT peers and nodes reach this coordinator at).") var advertise: String?
    @Option(help: "Override upstream.coordinators (comma-separated HOST:PORT of the global cluster; makes this cluster a region).") var upstream: String?
    @Option(help: "Override upstream.name (the node certificate node-<name>.pem this region's coordinator uses upstream).") var upstreamName: String?
    @Option(help: "Fault injection (rigs): added latency per direction on the upstream link, milliseconds.") var upstreamLatencyMs: Int?
    @Option(help: "Fault injection (rigs): ± jitter around it, milliseconds.") var upstreamJitterMs = 0
    @Flag(help: "Fault injection (rigs): SIGUSR1 cuts the upstream link (frames dropped both ways), SIGUSR2 heals it.") var upstreamFaults = false
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: Logger.Level = .info
    @Option(help: "Log lines as text or json (one JSON object per line: time, level, label, message, metadata).") var logFormat: LogFormat = .text
    @OptionGroup var telemetry: TelemetryOptions

    func run() async throws {
        logFormat.bootstrap()
        // Library metrics (swift-metrics: Hummingbird's request counts) are scraped beside ours.
        Telemetry.bootstrapMetrics(into: LibraryMetrics.registry)
        var cfg = try CoordinatorConfig.load(path: config)
        if let listen { (cfg.listenHost, cfg.listenPort) = try ConfigFields.address(listen, field: "--listen") }
        if let admin { (cfg.adminHost, cfg.adminPort) = try ConfigFields.address(admin, field: "--admin") }
        if let adminApi {
            let (h, p) = try ConfigFields.address(adminApi, field: "--admin-api")
            (cfg.adminAPIHost, cfg.adminAPIPort) = (h, p)
        }
        if let tlsDir { cfg.tlsDirectory = tlsDir }
        if let name { cfg.name = name; cfg.core.name = name }
        if let trustDomain { cfg.trustDomain = trustDomain }
        if let ledger {
            cfg.ledger = try LedgerLocation(parsing: ledger)
            cfg.ledgerSet = true
        }
        if let seeds {
            var cs = cfg.cluster ?? ClusterService.Settings()
            cs.seeds = seeds.split(separator: ",").map(String.init)
            if cfg.cluster == nil || cs.members.isEmpty { cs.members = cs.seeds }
            cfg.cluster = cs
            // A majority of every coordinator, as for the file (never of the seeds alone).
            cfg.quorum = Set(cs.members).count / 2 + 1
        }
        if let advertise { cfg.advertise = advertise }
        if let upstream {
            var up = cfg.upstream ?? CoordinatorConfig.UpstreamConfig(coordinators: [])
            up.coordinators = upstream.split(separator: ",").map(String.init)
            for (i, a) in up.coordinators.enumerated() { _ = try ConfigFields.address(a, field: "--upstream[\(i)]") }
            cfg.upstream = up
        }
        var faults: FaultyLink.Settings?
        if upstreamFaults || upstreamLatencyMs != nil {
            guard cfg.upstream != nil else { throw ValidationError("--upstream-faults and --upstream-latency-ms need an upstream") }
            guard (upstreamLatencyMs ?? 0) >= 0, upstreamJitterMs >= 0, upstreamJitterMs <= (upstreamLatencyMs ?? 0) else {
                throw ValidationError("--upstream-latency-ms must be ≥ 0 and --upstream-jitter-ms between 0 and it")
            }
            faults = FaultyLink.Settings(latency: .milliseconds(Int64(upstreamLatencyMs ?? 0)), jitter: .milliseconds(Int64(upstreamJitterMs)))
        }
        if let upstreamName {
            guard cfg.upstream != nil else { throw ValidationError("--upstream-name needs --upstream or an upstream: section") }
            cfg.upstream?.name = upstreamName
        }
        let domain = cfg.trustDomain
        var logger = Logger(label: "allot.coordinator")
        logger.logLevel = logLevel
        let tracing = try telemetry.tracer(serviceName: "allot-coordinator", logger: logger)
        let dir = URL(fileURLWithPath: cfg.tlsDirectory)
        let coordinatorName = cfg.name
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .coordinator, name: coordinatorName, trustDomain: domain) }
        let core = try CoordinatorService.makeCore(config: cfg, logger: logger, now: WallClock.now())
        // Rigs only: the region's link to the global cluster through a faulty link.
        var faultSignals: [any DispatchSourceSignal] = []
        defer { for f in faultSignals { f.cancel() } }
        var wrapUplink: (@Sendable (@escaping Dialer) -> Dialer)?
        if let faults {
            let link = FaultyLink(settings: faults, loop: MultiThreadedEventLoopGroup.singleton.next())
            faultSignals = link.signals(logger: logger)
            wrapUplink = { link.wrap($0) }
            logger.warning("fault injection on the upstream link (SIGUSR1 cuts it, SIGUSR2 heals it)",
                           metadata: ["allot.latency": "\(faults.latency)", "allot.jitter": "\(faults.jitter)"])
        }
        let service = CoordinatorService(config: cfg, core: core, tls: tls, logger: logger, onListening: { address, adminAddress in
            let line = "allot coordinator \(coordinatorName) listening on \(address.ipAddress ?? "?"):\(address.port ?? 0), admin http://\(adminAddress.ipAddress ?? "?"):\(adminAddress.port ?? 0)\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }, tracer: tracing?.tracer)
        // The span exporter first: it stops last and flushes the last spans.
        var services: [any Service] = tracing.map { [$0.service] } ?? []
        if var up = try CoordinatorService.uplink(config: cfg) {
            // A region: the global budgets are leased from the global cluster as a node. Listed
            // first, it stops last (a ServiceGroup stops its services in reverse): the
            // coordinator leaves its cluster and drains its nodes, then the free units of the
            // global budgets go back upstream.
            if let wrapUplink { up.dial = wrapUplink(up.dial) }
            var ls = LeaseClient.Settings()
            ls.pollInterval = .milliseconds(50)
            services.append(LeaseClient(endpoint: RegionUplink(core: core), seeds: up.seeds, settings: ls, logger: logger, dial: up.dial))
            logger.info("region: leasing global budgets from the global cluster",
                        metadata: ["allot.upstream": "\(up.seeds.joined(separator: ","))", "allot.as": "\(up.name)"])
        }
        services += service.services()
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}
