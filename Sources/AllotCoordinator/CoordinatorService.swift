import AllotConfig
import AllotCluster
import AllotCore
import AllotTransport
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// `allot coordinator` as a swift-service-lifecycle `Service`: its `run()` is its whole
/// life. Starts the mTLS listener and the admin endpoint, reloads certificates on SIGHUP
/// (existing connections and leases carry on), and on graceful shutdown (SIGTERM) tells
/// every peer, closes the listener and returns.
public final class CoordinatorService: Service, Sendable {
    public let config: CoordinatorConfig
    public let core: CoordinatorCore
    private let tls: TLSMaterialStore
    private let logger: Logger
    private let group: any EventLoopGroup
    private let ready = Mutex(false)
    /// Called once both listeners are bound (the coordinator and admin addresses).
    private let onListening: @Sendable (SocketAddress, SocketAddress) -> Void

    public init(config: CoordinatorConfig, core: CoordinatorCore, tls: TLSMaterialStore, logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                onListening: @escaping @Sendable (SocketAddress, SocketAddress) -> Void = { _, _ in }) {
        self.config = config
        self.core = core
        self.tls = tls
        self.logger = logger
        self.group = group
        self.onListening = onListening
    }

    static func modificationDates(_ paths: [String]) -> [Date?] {
        paths.map { (try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate]) as? Date }
    }

    /// Opens the ledger named in `config` (nil for none) and builds the core for it, as a
    /// cluster member when `config.cluster` is set.
    public static func makeCore(config: CoordinatorConfig, logger: Logger, now: Instant) throws -> CoordinatorCore {
        var settings = config.core
        if config.cluster != nil {
            let advertise = config.advertise ?? "\(config.listenHost):\(config.listenPort)"
            guard let port = Int(advertise.split(separator: ":").last ?? ""), port != 0 else {
                throw AllotError(.invalidSettings, "cluster mode needs a fixed port in coordinator.listen or coordinator.advertise (got \(advertise))")
            }
            if let members = config.cluster?.members, !members.isEmpty, !members.contains(advertise) {
                throw AllotError(.invalidSettings, "cluster.members (the seeds when not given) must list every coordinator, this one too: \(advertise) is not among \(members.joined(separator: ", ")); the quorum is a majority of that list")
            }
            settings.member = MemberID(name: config.name, address: advertise)
            settings.quorum = config.quorum
            if config.hasQuotas && config.ledger == .none {
                throw AllotError(.invalidSettings, "ledger: cluster mode with quota budgets needs a ledger (sqlite:PATH on one machine, postgres://… across machines): a quota that moves between coordinators resumes from it")
            }
        }
        if let up = config.upstream {
            // A region: global budgets come from the global cluster. It refreshes them more
            // slowly than the leaves, and renews while a whole regional lease still fits.
            var us = UpstreamClient.Settings(node: NodeID(up.name ?? config.name))
            us.refreshInterval = up.refreshInterval
            us.retryTimeout = max(.milliseconds(500), up.refreshInterval / 4)
            us.renewMargin = max(settings.allocator.leaseTTL, up.refreshInterval * 3)
            settings.upstream = us
        }
        var store: (any LedgerStore)?
        switch config.ledger {
        case .none: store = nil
        case .sqlite(let path): store = try SQLiteLedger.open(path: path, logger: logger)
        case .postgres(let target):
            store = try PostgresLedger(target, logger: logger)
        }
        return try CoordinatorCore(settings: settings, budgets: config.budgets, ledger: store.map { LedgerWriter(store: $0, logger: logger) }, now: now)
    }

    /// A region (`upstream:` set): how its uplink reaches the global cluster — the seeds, the
    /// node name it leases as, and a dialer with the region's node certificate. Run a
    /// `LeaseClient` over `RegionUplink(core:)` with it, after this service in the same
    /// `ServiceGroup` (shut down first: the global budgets' free units go back upstream).
    public static func uplink(config: CoordinatorConfig, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws -> (seeds: [String], name: String, dial: Dialer)? {
        guard let up = config.upstream else { return nil }
        let dir = URL(fileURLWithPath: up.tlsDirectory ?? config.tlsDirectory)
        let domain = up.trustDomain ?? config.trustDomain
        let name = up.name ?? config.name
        let nodeTLS = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: name, trustDomain: domain) }
        return (up.coordinators, name, TLSLeaseTransport.dialer(tls: nodeTLS, group: group))
    }

    /// True while the listener accepts lease traffic, the ledger (if any) is writable and
    /// the cluster view (if any) is formed with a quorum (`/readyz`).
    public var isReady: Bool {
        ready.withLock { $0 } && (core.ledger?.isHealthy ?? true) && core.isServing
    }

    public func run() async throws {
        if let ledger = core.ledger {
            // Nothing durable is granted before the schema is known; keep trying (not ready).
            var backoff = Duration.milliseconds(100)
            while true {
                do {
                    try await ledger.store.migrate()
                    break
                } catch {
                    logger.error("cannot open the ledger; retrying", metadata: ["allot.ledger": "\(ledger.store.description)", "allot.error": "\(error)"])
                    if Task.isCancelled { return }
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        }
        core.start(now: WallClock.now())
        let server = CoordinatorServer(core: core, tls: tls, group: group, logger: logger)
        let admin = AdminServer(core: core, group: group, ready: { [self] in self.isReady }, logger: logger)
        let address = try await server.start(host: config.listenHost, port: config.listenPort)
        let adminAddress = try await admin.start(host: config.adminHost, port: config.adminPort)
        var cluster: ClusterService?
        if let cs = config.cluster {
            let tls = self.tls, group = self.group
            let c = ClusterService(core: core, settings: cs, logger: logger, now: WallClock.now()) { address in
                guard let (host, port) = try? ConfigFields.address(address, field: "peer") else { return nil }
                return TLSLeaseTransport(host: host, port: port, tls: tls, group: group)
            }
            c.start(on: group.next())
            cluster = c
        }
        ready.withLock { $0 = true }
        onListening(address, adminAddress)

        signal(SIGHUP, SIG_IGN)
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP)
        hup.setEventHandler { [tls, logger, core] in
            do {
                try tls.reload()
                let closed = core.disconnect(denied: tls.current.denyList)
                logger.info("reloaded TLS certificates and the deny list", metadata: ["allot.denied_connections_closed": "\(closed)"])
            } catch {
                logger.error("TLS reload failed; keeping the previous certificates", metadata: ["allot.error": "\(error)"])
            }
        }
        hup.resume()
        defer { hup.cancel() }
        // Also reload when the certificate files change on disk (checked every 2 s).
        let files = ["ca.pem", "deny-list", "coordinator-\(config.name).pem", "coordinator-\(config.name)-key.pem"].map {
            URL(fileURLWithPath: config.tlsDirectory).appendingPathComponent($0).path
        }
        let stamps = Mutex(Self.modificationDates(files))
        let watcher = group.next().scheduleRepeatedTask(initialDelay: .seconds(2), delay: .seconds(2)) { [tls, logger, core] _ in
            let now = Self.modificationDates(files)
            guard stamps.withLock({ old in defer { old = now }; return old != now }) else { return }
            do {
                try tls.reload()
                core.disconnect(denied: tls.current.denyList)
                logger.info("certificate files changed: reloaded TLS certificates")
            } catch {
                logger.error("certificate files changed but do not load; keeping the previous ones", metadata: ["allot.error": "\(error)"])
            }
        }
        defer { watcher.cancel() }

        try? await gracefulShutdown()
        logger.info("shutting down: draining connections")
        ready.withLock { $0 = false }
        await cluster?.leave()
        try await server.shutdown()
        await admin.shutdown()
        if let ledger = core.ledger {
            // Releases and reports received so far go to the ledger before exit.
            core.flushJournal()
            await ledger.flush()
            await ledger.store.close()
        }
    }
}
