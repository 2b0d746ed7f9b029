import AllotGateway
import AllotCoordinator
import AllotCore
import AllotNode
import AllotTransport
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization
import Tracing

/// A whole deployment in one process on loopback, for the demo and the tests: throwaway
/// certificates, a coordinator serving leases over mutual TLS, the mock upstream, and N
/// gateway nodes, each with its own audit trail.
public final class LocalFleet: Sendable {
    public let directory: URL
    public let coordinator: CoordinatorCore
    public let gateways: [GatewayService]
    public let proxyPorts: [Int]
    public let adminPorts: [Int]
    public let mockPort: Int?
    public let coordinatorPort: Int
    /// The coordinator's admin listener (`/metrics`, `/healthz`, `/readyz`).
    public let coordinatorAdminPort: Int
    /// The coordinator's service (its admin API's port, when started with `adminAPI`).
    public let coordinatorService: CoordinatorService
    private let group: ServiceGroup
    private let runner: Task<Void, any Error>

    /// Audit trail directory of node `i`.
    public func auditDirectory(_ i: Int) -> URL { directory.appendingPathComponent("audit-gw-\(i + 1)") }

    /// Starts everything and returns once every listener is bound.
    /// `config`: its `upstream` is replaced by the mock's address when `mock` is given.
    public static func start(config base: GatewayConfig, consumers: ConsumerDirectory, nodes: Int,
                             mock: MockUpstream.Settings? = MockUpstream.Settings(), clientSettings: LeaseClient.Settings = .init(),
                             logLevel: Logger.Level = .critical, observer: GatewayEvent.Observer? = nil,
                             ledgerPath: String? = nil, adminAPI: Bool = false,
                             coordinatorTracer: (any Tracer)? = nil) async throws -> LocalFleet {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-fleet-\(UUID().uuidString.prefix(8))")
        let ca = try CertificateAuthority.create(in: dir.appendingPathComponent("certs"), trustDomain: "demo.allot.local")
        _ = try ca.issue(role: .coordinator, name: "coordinator", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        for i in 0..<nodes { _ = try ca.issue(role: .node, name: "gw-\(i + 1)") }
        var logger = Logger(label: "allot.fleet")
        logger.logLevel = logLevel

        // The coordinator, on an ephemeral port.
        var cc = CoordinatorConfig(shared: base.shared)
        cc.listenPort = 0
        cc.adminPort = 0
        cc.name = "coordinator"
        cc.core.name = "coordinator"
        cc.tlsDirectory = ca.directory.path
        if adminAPI { cc.adminAPIHost = "127.0.0.1" }
        let certDir = ca.directory
        let ctls = try TLSMaterialStore { try TLSMaterial.load(dir: certDir, role: .coordinator, name: "coordinator") }
        // With `ledgerPath`, a SQLite ledger (quota budgets durable, audit heads kept).
        var writer: LedgerWriter?
        if let ledgerPath {
            let store = try SQLiteLedger.open(path: ledgerPath, logger: logger)
            try await store.migrate()
            writer = LedgerWriter(store: store, logger: logger)
        }
        let core = try CoordinatorCore(settings: cc.core, budgets: cc.budgets, ledger: writer, now: WallClock.now())
        core.start(now: WallClock.now())
        let bound = PortBox(count: 3 + nodes * 2)
        let coordinatorService = CoordinatorService(config: cc, core: core, tls: ctls, logger: logger, onListening: { a, admin in
            bound.set(0, a.port ?? 0)
            bound.set(2 + nodes * 2, admin.port ?? 0)
        }, tracer: coordinatorTracer)
        var services: [any Service] = coordinatorService.services()
        var mockService: MockUpstream?
        if let mock {
            var m = mock
            m.port = 0
            mockService = MockUpstream(settings: m, onListening: { bound.set(1, $0) })
            services.append(mockService!)
        } else {
            bound.set(1, -1)
        }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: logger))
        // Services are added to the running group below (gateways need the coordinator's port).
        let runner = Task { try await group.run() }
        let (cport, mport) = try await (bound.wait(0), bound.wait(1))

        var gateways: [GatewayService] = []
        for i in 0..<nodes {
            var g = base
            g.name = "gw-\(i + 1)"
            g.listenPort = 0
            g.adminPort = 0
            g.coordinatorPort = cport
            if mport > 0 { g.upstream = URL(string: "http://127.0.0.1:\(mport)")! }
            if base.auditDirectory != nil { g.auditDirectory = dir.appendingPathComponent("audit-gw-\(i + 1)").path }
            if base.directoryCache != nil { g.directoryCache = dir.appendingPathComponent("directory-gw-\(i + 1).json").path }
            let name = g.name
            let tls = try TLSMaterialStore { try TLSMaterial.load(dir: certDir, role: .node, name: name) }
            let transport = TLSLeaseTransport(host: "127.0.0.1", port: cport, tls: tls, group: MultiThreadedEventLoopGroup.singleton)
            let slot = 2 + i * 2
            let gw = try GatewayService(config: g, consumers: consumers, transport: transport, clientSettings: clientSettings,
                                        logger: logger, onListening: { p, a in
                                            bound.set(slot, p)
                                            bound.set(slot + 1, a)
                                        }, observer: observer)
            gateways.append(gw)
            await group.addServiceUnlessShutdown(gw)
        }
        var proxies: [Int] = [], admins: [Int] = []
        for i in 0..<nodes {
            proxies.append(try await bound.wait(2 + i * 2))
            admins.append(try await bound.wait(3 + i * 2))
        }
        // Ready when every node holds a connection to the coordinator.
        for _ in 0..<500 where !gateways.allSatisfy({ $0.leaseClient.isConnected }) {
            try await Task.sleep(for: .milliseconds(10))
        }
        let coordinatorAdmin = try await bound.wait(2 + nodes * 2)
        return LocalFleet(directory: dir, coordinator: core, gateways: gateways, proxyPorts: proxies, adminPorts: admins,
                          mockPort: mport > 0 ? mport : nil, coordinatorPort: cport, coordinatorAdminPort: coordinatorAdmin,
                          coordinatorService: coordinatorService,
                          group: group, runner: runner)
    }

    private init(directory: URL, coordinator: CoordinatorCore, gateways: [GatewayService], proxyPorts: [Int], adminPorts: [Int],
                 mockPort: Int?, coordinatorPort: Int, coordinatorAdminPort: Int, coordinatorService: CoordinatorService, group: ServiceGroup,
                 runner: Task<Void, any Error>) {
        self.directory = directory
        self.coordinator = coordinator
        self.gateways = gateways
        self.proxyPorts = proxyPorts
        self.adminPorts = adminPorts
        self.mockPort = mockPort
        self.coordinatorPort = coordinatorPort
        self.coordinatorAdminPort = coordinatorAdminPort
        self.coordinatorService = coordinatorService
        self.group = group
        self.runner = runner
    }

    /// Stops the gateways (requests in flight finish and settle, leases are released), then
    /// the mock and the coordinator. Keeps the directory (audit trails) unless `remove`.
    public func stop(remove: Bool = false) async {
        await group.triggerGracefulShutdown()
        _ = try? await runner.value
        if remove { try? FileManager.default.removeItem(at: directory) }
    }
}

/// Ports reported by listeners as they bind, awaited by the starter (bounded: 10 s).
public final class PortBox: Sendable {
    private let ports: Mutex<[Int?]>
    public init(count: Int) { ports = Mutex(Array(repeating: nil, count: count)) }
    public func set(_ i: Int, _ port: Int) { ports.withLock { $0[i] = port } }
    public func wait(_ i: Int) async throws -> Int {
        for _ in 0..<1000 {
            if let p = ports.withLock({ $0[i] }) { return p }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw AllotError(.invalidSettings, "a listener of the local fleet did not start within 10 s")
    }
}
