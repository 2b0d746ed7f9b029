import AllotTesting
import AllotCluster
import AllotCore
import AllotCoordinator
import AllotNode
import AllotTransport
import AllotWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

let testGroup = MultiThreadedEventLoopGroup.singleton

func quietLogger(_ label: String) -> Logger {
    var l = Logger(label: label)
    l.logLevel = .critical
    return l
}

func tempPath(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}

struct Down: Error {}

/// Lease settings for the cluster tests: short leases, so learning and expiry fit in seconds.
let fastAllocator: AllocatorSettings = {
    var a = AllocatorSettings()
    a.leaseTTL = .seconds(2)
    a.refreshInterval = .milliseconds(200)
    return a
}()

/// In-process coordinators (real `CoordinatorCore`, `ClusterService`, ledger) reached by
/// address through the protocol's `Session` rules, and nodes with real `LeaseClient`s. A
/// crash closes every connection of a coordinator at once and makes it unreachable.
final class Harness: Sendable {
    struct Member: Sendable {
        var core: CoordinatorCore
        var cluster: ClusterService?
        var ticker: RepeatedTask
    }

    private let members = Mutex<[String: Member]>([:])
    /// Crashed members' cores: their ledger files are closed only at the end.
    private let graveyard = Mutex<[CoordinatorCore]>([])
    private let down = Mutex<Set<String>>([])
    /// Units nodes received in grants, by budget (what coordinators acknowledged).
    let received = Mutex<[BudgetID: Int64]>([:])
    let domain = "test"

    func core(_ address: String) -> CoordinatorCore? { members.withLock { $0[address]?.core } }
    func cluster(_ address: String) -> ClusterService? { members.withLock { $0[address]?.cluster } }
    var addresses: [String] { members.withLock { $0.keys.sorted() } }

    func isDown(_ address: String) -> Bool { down.withLock { $0.contains(address) } }

    func dial(as role: PeerIdentity.Role, _ name: String) -> @Sendable (String) -> (any LeaseTransport)? {
        { [self] address in HarnessTransport(harness: self, address: address, identity: try! PeerIdentity(trustDomain: domain, role: role, name: name)) }
    }

    /// Starts a coordinator at `address` (cluster mode when `seeds` is not nil).
    @discardableResult
    func start(_ name: String, address: String, budgets: [BudgetSpec], tiers: [Tier] = [], seeds: [String]?,
               ledger: (any LedgerStore)? = nil, allocator: AllocatorSettings, migrate: Bool = true,
               upstream: UpstreamClient.Settings? = nil) async throws -> CoordinatorCore {
        var settings = CoordinatorCore.Settings()
        settings.name = name
        settings.upstream = upstream
        settings.allocator = allocator
        settings.tiers = tiers
        if seeds != nil { settings.member = MemberID(name: name, address: address) }
        if let ledger, migrate { try await ledger.migrate() }
        let core = try CoordinatorCore(settings: settings, budgets: budgets, ledger: ledger.map { LedgerWriter(store: $0, logger: quietLogger("l")) },
                                       now: WallClock.now())
        core.start(now: WallClock.now())
        var cluster: ClusterService?
        if let seeds {
            var cs = ClusterService.Settings()
            cs.seeds = seeds
            cs.members = seeds // as the config does without cluster.members
            cs.membership.protocolPeriod = .milliseconds(100)
            cs.membership.pingTimeout = .milliseconds(40)
            cs.membership.suspicionTimeout = .milliseconds(500)
            cs.joinTimeout = .milliseconds(600)
            cs.tickInterval = .milliseconds(20)
            let c = ClusterService(core: core, settings: cs, logger: quietLogger("cluster"), now: WallClock.now(), dial: dial(as: .coordinator, name))
            cluster = c
        }
        let ticker = testGroup.next().scheduleRepeatedTask(initialDelay: .milliseconds(50), delay: .milliseconds(50)) { _ in
            core.tick(now: WallClock.now())
        }
        members.withLock { $0[address] = Member(core: core, cluster: cluster, ticker: ticker) }
        down.withLock { _ = $0.remove(address) }
        cluster?.start(on: testGroup.next())
        return core
    }

    /// A crash: no leave, no releases, no ledger flush; every connection dropped.
    func crash(_ address: String) {
        down.withLock { _ = $0.insert(address) }
        guard let m = members.withLock({ $0.removeValue(forKey: address) }) else { return }
        m.ticker.cancel()
        m.cluster?.stop()
        m.core.abort()
        graveyard.withLock { $0.append(m.core) }
    }

    /// Stops everything and closes the ledgers.
    func stopAll() async {
        for a in addresses { crash(a) }
        for core in graveyard.withLock({ $0 }) {
            if let l = core.ledger {
                await l.flush()
                await l.store.close()
            }
        }
    }

    /// Waits (bounded) until `condition` holds.
    func wait(_ seconds: Double, _ condition: () -> Bool) async {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
    }
}

struct HarnessTransport: LeaseTransport {
    let harness: Harness
    let address: String
    let identity: PeerIdentity

    func connect(onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
                 onClose: @escaping @Sendable () -> Void) async throws -> any LeaseConnection {
        guard !harness.isDown(address), let core = harness.core(address) else { throw Down() }
        let h = harness
        return try await InProcessTransport(core: core, identity: identity).connect(onFrame: { frame in
            if identity.role == .node, case .grants(let b) = frame.body {
                h.received.withLock { r in for g in b.items where g.outcome == .granted { r[BudgetID(g.budget), default: 0] += g.amount } }
            }
            onFrame(frame)
        }, onClose: onClose)
    }
}

/// A gateway node: an enforcer with every budget, a lease client to the cluster, and the
/// timestamps of everything it admitted, per budget.
final class TestNode: Sendable {
    let enforcer: SharedEnforcer
    let client: LeaseClient
    let handles: [BudgetID: BudgetHandle]
    private let runner: Mutex<Task<Void, Never>?> = Mutex(nil)
    let admitted = Mutex<[BudgetID: [Int64]]>([:])

    init(_ name: String, budgets: [BudgetSpec], seeds: [String], harness: Harness, leaseTTL: Duration) throws {
        var settings = EnforcerSettings(node: NodeID(name))
        settings.leaseTTL = leaseTTL
        settings.refreshInterval = .milliseconds(200)
        settings.renewMargin = leaseTTL / 3
        enforcer = try SharedEnforcer(settings: settings)
        var h: [BudgetID: BudgetHandle] = [:]
        for b in budgets { h[b.id] = enforcer.register(b) }
        handles = h
        client = LeaseClient(enforcer: enforcer, seeds: seeds, logger: quietLogger("node"), dial: harness.dial(as: .node, name))
        let c = client
        runner.withLock { $0 = Task { await c.run() } }
    }

    /// One request on `budget`; true when admitted.
    @discardableResult
    func admit(_ budget: BudgetID) -> Bool {
        let now = WallClock.now()
        guard enforcer.admit(.oneRequest, on: BudgetSet(handles[budget]!), now: now).isAdmitted else { return false }
        admitted.withLock { $0[budget, default: []].append(now.nanoseconds) }
        return true
    }

    func total(_ budget: BudgetID) -> Int { admitted.withLock { $0[budget]?.count ?? 0 } }

    /// Gives every lease back and stops.
    func stop() async {
        let task = runner.withLock { $0 }
        task?.cancel()
        await task?.value
    }
}
