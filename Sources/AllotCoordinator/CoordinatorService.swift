import AllotConfig
import AllotCluster
import AllotCore
import AllotTransport
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Tracing

/// `allot coordinator`'s lease listener and the core's life, as a swift-service-lifecycle
/// `Service`: migrates the ledger, resumes the durable budgets, serves the mTLS listener,
/// and on graceful shutdown (SIGTERM) closes it, drains its peers and flushes the ledger.
///
/// The coordinator's other long-running parts are services of their own; `services()` lists
/// them all for one `ServiceGroup` (which runs them together and stops them in reverse): the
/// admin listener, this one, the cluster's gossip (it waits until this one serves, and leaves
/// first), and the certificate reloader (SIGHUP and file changes).
public final class CoordinatorService: Service, Sendable {
    public let config: CoordinatorConfig
    public let core: CoordinatorCore
    private let tls: TLSMaterialStore
    private let logger: Logger
    private let tracer: (any Tracer)?
    private let group: any EventLoopGroup
    private let ready = Mutex(false)
    /// Called once both listeners are bound (the coordinator and admin addresses).
    private let onListening: @Sendable (SocketAddress, SocketAddress) -> Void
    private let bound = Mutex<(lease: SocketAddress?, admin: SocketAddress?)>((nil, nil))
    private let apiPort = Mutex<Int?>(nil)
    /// The admin API's bound port, once it listens (`coordinator.admin_api`).
    public var adminAPIPort: Int? { apiPort.withLock { $0 } }
    /// The cluster's gossip when `config.cluster` is set.
    public let cluster: ClusterService?

    public init(config: CoordinatorConfig, core: CoordinatorCore, tls: TLSMaterialStore, logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                onListening: @escaping @Sendable (SocketAddress, SocketAddress) -> Void = { _, _ in },
                tracer: (any Tracer)? = nil) {
        self.config = config
        self.tracer = tracer
        self.core = core
        self.tls = tls
        self.logger = logger
        self.group = group
        self.onListening = onListening
        cluster = config.cluster.map { cs in
            ClusterService(core: core, settings: cs, logger: logger, now: WallClock.now(), loop: group.next()) { address in
                guard let (host, port) = try? ConfigFields.address(address, field: "peer") else { return nil }
                return TLSLeaseTransport(host: host, port: port, tls: tls, group: group)
            }
        }
    }

    /// Every part, in the order a `ServiceGroup` should hold them (it stops them in reverse):
    /// the admin listener (stops last of these, so `/readyz` says 503 through the drain),
    /// this service, the cluster's gossip (leaves first), the certificate reloader. Put them
    /// after a region's uplink (which must stop last). Call once: this service and the
    /// cluster are in every list.
    public func services() -> [any Service] {
        let admin = AdminServer(core: core, group: group, ready: { [weak self] in self?.isReady ?? false }, logger: logger)
        // Also reload when the certificate files change on disk.
        let files = ["ca.pem", "deny-list", "coordinator-\(config.name).pem", "coordinator-\(config.name)-key.pem"].map {
            URL(fileURLWithPath: config.tlsDirectory).appendingPathComponent($0).path
        }
        let adminService = admin.service(host: config.adminHost, port: config.adminPort) { [weak self] in self?.listening(admin: $0) }
        var api: [any Service] = []
        if let host = config.adminAPIHost {
            let (core, tls, logger, port) = (core, tls, logger, config.adminAPIPort)
            api.append(ServiceRunner { [weak self] in
                try await AdminAPI(core: core, tls: tls, logger: logger).service(host: host, port: port) { [weak self] p in
                    self?.apiPort.withLock { $0 = p }
                    logger.info("admin API listening", metadata: ["allot.address": "https://\(host):\(p)"])
                }.run()
            })
        }
        // The API after this service: stopped before it (the ledger closes last).
        return [adminService, self] + api + (cluster.map { [$0] } ?? [])
            + [CertificateReloader(tls: tls, core: core, files: files, logger: logger), DirectoryKeeper.Poller(core: core, logger: logger)]
    }

    private func listening(lease: SocketAddress? = nil, admin: SocketAddress? = nil) {
        let both = bound.withLock { b -> (SocketAddress, SocketAddress)? in
            if let lease { b.lease = lease }
            if let admin { b.admin = admin }
            guard let l = b.lease, let a = b.admin else { return nil }
            return (l, a)
        }
        if let both { onListening(both.0, both.1) }
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
                    if Task.isCancelled || Task.isShuttingDownGracefully { return }
                    let wait = backoff
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
                    if Task.isCancelled || Task.isShuttingDownGracefully { return }
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        }
        if core.ledger != nil {
            // The newest policy version in the ledger, if any, wins over the file's: nothing is
            // served before it is read (the file may hold limits a version lowered). A version
            // this coordinator cannot take (written by a newer allot) is logged; the file's serve.
            var backoff = Duration.milliseconds(100)
            while true {
                do {
                    try await core.config.refresh(core, logger: logger)
                    break
                } catch let e as AllotError {
                    logger.critical("the ledger's newest policy version cannot be put in force; serving the file's", metadata: ["allot.error": "\(e.message)"])
                    break
                } catch {
                    logger.error("cannot read the policy's versions from the ledger; retrying", metadata: ["allot.error": "\(error)"])
                    if Task.isCancelled || Task.isShuttingDownGracefully { return }
                    let wait = backoff
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: wait) }
                    if Task.isCancelled || Task.isShuttingDownGracefully { return }
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        }
        core.start(now: WallClock.now())
        let server = CoordinatorServer(core: core, tls: tls, group: group, logger: logger, tracer: tracer)
        let address = try await server.start(host: config.listenHost, port: config.listenPort)
        ready.withLock { $0 = true }
        core.serving.open()
        listening(lease: address)

        try? await gracefulShutdown()
        logger.info("shutting down: draining connections")
        ready.withLock { $0 = false }
        try await server.shutdown()
        if let ledger = core.ledger {
            // Releases and reports received so far go to the ledger before exit.
            core.flushJournal()
            await ledger.flush()
            await ledger.store.close()
        }
    }
}

/// A `Service` from a closure (a part made when the group starts, so its errors stop the group).
struct ServiceRunner: Service {
    let body: @Sendable () async throws -> Void
    init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }
    func run() async throws { try await body() }
}
