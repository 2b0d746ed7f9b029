import AllotCoordination
import AllotCore

/// Two regions in virtual time: each a region's `CoordinatorMachine` (its `reach: global`
/// budgets upstream-backed) with gateway nodes (real `Enforcer`s), leasing from a global
/// `CoordinatorMachine` as one node each, over links the test can cut or take down.
struct VirtualRegions {
    enum Event {
        case toRegion(Int, node: Int, Enforcer.Outgoing)
        case toNode(Int, [CoordinatorMachine.Answer])
        case toGlobal(Int, Enforcer.Outgoing)
        case fromGlobal(Int, [CoordinatorMachine.Answer])
    }

    let budgets: [BudgetSpec]
    var global: CoordinatorMachine
    var regions: [CoordinatorMachine] = []
    var nodes: [Enforcer] = []
    var handles: [[BudgetID: BudgetHandle]] = []
    var regionOf: [Int] = []
    /// Regions whose link to the global coordinator loses everything, both ways.
    var cut: Set<Int> = []
    /// The global coordinator is not running: what is sent to it is lost.
    var globalDown = false
    /// Admissions per region and budget.
    var admitted: [[BudgetID: Int]] = [[:], [:]]
    var now: Instant
    var step: Duration = .milliseconds(10)
    /// Within a region, and between a region and the global coordinator.
    var local: Duration = .milliseconds(1)
    var cross: Duration = .milliseconds(30)
    private var lives = [1, 1]
    private var queue: [(at: Instant, seq: Int, event: Event)] = []
    private var seq = 0

    static let leaf: AllocatorSettings = {
        var a = AllocatorSettings()
        a.leaseTTL = .seconds(1)
        a.refreshInterval = .milliseconds(200)
        return a
    }()

    static let globalSettings: AllocatorSettings = {
        var a = AllocatorSettings()
        a.leaseTTL = .seconds(3)
        a.refreshInterval = .milliseconds(500)
        return a
    }()

    /// `budgets`: what every region serves (the global cluster keeps those with `reach: global`).
    init(budgets: [BudgetSpec], nodesPerRegion: Int = 2, now: Instant) throws {
        self.budgets = budgets
        self.now = now
        var g = CoordinatorMachine.Settings()
        g.allocator = Self.globalSettings
        global = try CoordinatorMachine(settings: g, budgets: budgets.filter { $0.reach == .global }, now: now)
        for r in 0..<2 {
            regions.append(try Self.region(r, budgets: budgets, now: now))
            for i in 0..<nodesPerRegion {
                let (e, h) = try node("r\(r)-gw\(i)", budgets: budgets, allocator: Self.leaf)
                nodes.append(e)
                handles.append(h)
                regionOf.append(r)
            }
        }
        for r in 0..<2 { global.hello(node: NodeID("region-\(r)"), incarnation: 1) }
    }

    static func region(_ r: Int, budgets: [BudgetSpec], now: Instant) throws -> CoordinatorMachine {
        var s = CoordinatorMachine.Settings()
        s.allocator = leaf
        var up = UpstreamClient.Settings(node: NodeID("region-\(r)"))
        up.refreshInterval = .milliseconds(500)
        up.retryTimeout = .milliseconds(250)
        up.renewMargin = .seconds(1)
        s.upstream = up
        return try CoordinatorMachine(settings: s, budgets: budgets, now: now)
    }

    /// Region `r`'s coordinator restarts: a fresh machine, a new life towards the global one
    /// (its uplink's hello). Its gateways keep what they hold, or (`freshGateways`) restart too.
    mutating func restartRegion(_ r: Int, freshGateways: Bool) throws {
        regions[r] = try Self.region(r, budgets: budgets, now: now)
        lives[r] += 1
        global.hello(node: NodeID("region-\(r)"), incarnation: UInt64(lives[r]))
        guard freshGateways else { return }
        for n in nodes.indices where regionOf[n] == r {
            (nodes[n], handles[n]) = try node("\(nodes[n].settings.node)", budgets: budgets, allocator: Self.leaf)
        }
        queue.removeAll { if case .toNode(let n, _) = $0.event { regionOf[n] == r } else { false } }
    }

    /// Runs for `d`; `demand(region, budget, t)`: requests each node of the region tries per step.
    mutating func run(for d: Duration, demand: (Int, BudgetID, Duration) -> Int) {
        let end = now + d, start = now
        while now < end {
            now = now + step
            deliver()
            for n in nodes.indices {
                let r = regionOf[n]
                for b in budgets {
                    for _ in 0..<demand(r, b.id, now - start)
                    where nodes[n].admit(.oneRequest, on: BudgetSet(handles[n][b.id]!), now: now).isAdmitted {
                        admitted[r][b.id, default: 0] += 1
                    }
                }
                for m in nodes[n].poll(now: now) { schedule(.toRegion(r, node: n, m), after: local) }
            }
            for r in regions.indices {
                pushes(regions[r].tick(now: now))
                for m in regions[r].upstreamStep(now: now) { toGlobal(r, m) }
            }
            if !globalDown { _ = global.tick(now: now) }
        }
    }

    private mutating func schedule(_ e: Event, after d: Duration) {
        seq += 1
        queue.append((now + d, seq, e))
    }

    private mutating func toGlobal(_ r: Int, _ m: Enforcer.Outgoing) {
        guard !cut.contains(r) else { return }
        schedule(.toGlobal(r, m), after: cross)
    }

    private mutating func pushes(_ actions: [CoordinatorMachine.Action]) {
        for case .push(let ps) in actions {
            for p in ps {
                guard let n = nodes.indices.first(where: { nodes[$0].settings.node == p.node }) else { continue }
                schedule(.toNode(n, [.grant(p.grant)]), after: local)
            }
        }
    }

    private mutating func deliver() {
        while let i = queue.indices.filter({ queue[$0].at <= now }).min(by: { (queue[$0].at, queue[$0].seq) < (queue[$1].at, queue[$1].seq) }) {
            handle(queue.remove(at: i).event)
        }
    }

    private mutating func handle(_ e: Event) {
        switch e {
        case .toRegion(let r, let n, let m):
            switch m {
            case .acquire(let req):
                let (answers, actions) = regions[r].acquire([req], from: req.node, now: now)
                if !answers.isEmpty { schedule(.toNode(n, answers), after: local) }
                pushes(actions)
            case .release(let rel):
                pushes(regions[r].release([rel], from: rel.node, now: now))
            }
        case .toNode(let n, let answers):
            for a in answers {
                switch a {
                case .grant(let g): _ = nodes[n].receive(g, now: now)
                case .unavailable(_, let b, let after): nodes[n].retrySoon(b, after: max(.milliseconds(10), after), now: now)
                case .retryLater(let g, let after): nodes[n].retrySoon(g.budget, after: after, now: now)
                case .redirect, .unknownBudget, .stale: break
                }
            }
        case .toGlobal(let r, let m):
            guard !globalDown, !cut.contains(r) else { return }
            let node = NodeID("region-\(r)")
            switch m {
            case .acquire(let req):
                let answers = global.acquire([req], from: node, now: now).0
                if !answers.isEmpty { schedule(.fromGlobal(r, answers), after: cross) }
            case .release(let rel):
                _ = global.release([rel], from: node, now: now)
            }
        case .fromGlobal(let r, let answers):
            guard !cut.contains(r) else { return }
            for a in answers {
                switch a {
                case .grant(let g): regions[r].upstreamReceive([g], now: now)
                case .unavailable(_, let b, let after):
                    _ = regions[r].upstream { $0.retrySoon(b, after: max(.milliseconds(10), after), now: now) }
                case .retryLater(let g, let after):
                    _ = regions[r].upstream { $0.retrySoon(g.budget, after: after, now: now) }
                case .redirect, .unknownBudget, .stale: break
                }
            }
        }
    }
}
