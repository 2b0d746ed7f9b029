import AllotCluster
import AllotCoordination
import AllotCore

/// Coordinators (`CoordinatorMachine`s) and gateway nodes (real `Enforcer`s) in virtual
/// time, with a shared ledger that enforces the cap as the databases do. Messages take
/// `latency`; what reaches a crashed coordinator is lost. Nodes route each budget to its
/// owner among the members they were last told, follow redirects and retry refusals as
/// `LeaseClient` does. Failure detection is the test's: it says when the survivors'
/// views change (membership itself is tested in AllotClusterTests).
struct VirtualCluster {
    enum Event {
        case acquire(to: String, node: Int, [AcquireRequest])
        case release(to: String, node: Int, [ReleaseRequest])
        case answers(node: Int, [CoordinatorMachine.Answer])
        case members(node: Int, [MemberID])
        case ledgerWrite(from: String, [LedgerChange], held: [DurableGrants.Held])
        case recorded(to: String, [LedgerChange], held: [DurableGrants.Held], accepted: [Bool]?)
        case ledgerLoad(to: String, BudgetID)
    }

    let budgets: [BudgetSpec]
    let allocator: AllocatorSettings
    var members: [MemberID]
    var coordinators: [String: CoordinatorMachine] = [:]
    var down: Set<String> = []
    var nodes: [Enforcer] = []
    var handles: [[BudgetID: BudgetHandle]] = []
    /// The members each node was last told, and its redirects.
    var nodeView: [[MemberID]] = []
    var redirects: [[BudgetID: String]] = []
    /// Nodes that do not hear member lists (cut off from the survivors' broadcasts): they keep
    /// spending what they hold from a crashed owner until it expires.
    var deaf: Set<Int> = []
    /// Admission times (ns) per budget, all nodes together; and admissions per node and budget.
    var admitted: [BudgetID: [Int64]] = [:]
    var admittedBy: [[BudgetID: Int]] = []
    /// The shared ledger: counters per budget and window start.
    var ledger: [BudgetID: [Instant: LedgerCounters]] = [:]
    /// When set, every ledger write fails and every read is tried again later (the database is
    /// away), as the shell's load loop does.
    var ledgerDown = false
    var now: Instant
    var latency: Duration = .milliseconds(1)
    var step: Duration = .milliseconds(10)
    /// Time spent from each node's last admission to its next, at worst (the longest pause).
    var longestPause: [BudgetID: Duration] = [:]
    private var lastAdmitted: [BudgetID: Instant] = [:]
    private var queue: [(at: Instant, seq: Int, event: Event)] = []
    private var seq = 0

    init(coordinators names: [String], nodes count: Int, budgets: [BudgetSpec], allocator: AllocatorSettings,
         durable: Bool, quorum: Int = 0, now: Instant) throws {
        self.budgets = budgets
        self.allocator = allocator
        self.now = now
        members = names.map { MemberID(name: $0, address: "\($0):7000") }
        for m in members { try start(m.name, durable: durable, quorum: quorum) }
        for i in 0..<count {
            let (e, h) = try node("n\(i)", budgets: budgets, allocator: allocator)
            nodes.append(e)
            handles.append(h)
            nodeView.append(members)
            admittedBy.append([:])
            redirects.append([:])
        }
    }

    /// (Re)starts coordinator `name` with a fresh machine (a restart loses its memory).
    mutating func start(_ name: String, durable: Bool, quorum: Int = 0) throws {
        var s = CoordinatorMachine.Settings()
        s.allocator = allocator
        s.member = members.first { $0.name == name }
        s.quorum = quorum
        s.durable = durable
        coordinators[name] = try CoordinatorMachine(settings: s, budgets: budgets, now: now)
        down.remove(name)
        perform(name, coordinators[name]!.start())
    }

    mutating func crash(_ name: String) { down.insert(name) }

    /// Every live coordinator's view becomes `live` (the failure detector's verdict).
    mutating func viewChanged(_ live: [String]) {
        let view = members.filter { live.contains($0.name) }
        for name in live where !down.contains(name) {
            let actions = coordinators[name]!.viewChanged(view, now: now)
            perform(name, actions)
        }
    }

    /// Runs for `d`: each step delivers what is due, lets every node admit what `demand`
    /// says (requests per budget per node per step), polls the nodes and ticks the coordinators.
    mutating func run(for d: Duration, demand: (BudgetID) -> Int = { _ in 0 }) {
        let end = now + d
        while now < end {
            now = now + step
            deliver()
            for n in nodes.indices {
                for b in budgets {
                    for _ in 0..<demand(b.id) where admit(n, b.id) {}
                }
                send(n)
            }
            for name in coordinators.keys.sorted() where !down.contains(name) {
                let actions = coordinators[name]!.tick(now: now)
                perform(name, actions)
            }
        }
    }

    /// One request on `budget` at node `n`; true when admitted.
    @discardableResult
    mutating func admit(_ n: Int, _ budget: BudgetID) -> Bool {
        guard nodes[n].admit(.oneRequest, on: BudgetSet(handles[n][budget]!), now: now).isAdmitted else { return false }
        admitted[budget, default: []].append(now.nanoseconds)
        admittedBy[n][budget, default: 0] += 1
        if let last = lastAdmitted[budget] { longestPause[budget] = max(longestPause[budget] ?? .zero, now - last) }
        lastAdmitted[budget] = now
        return true
    }

    private mutating func schedule(_ e: Event, after d: Duration? = nil) {
        seq += 1
        queue.append((now + (d ?? latency), seq, e))
    }

    /// Node `n`'s messages, each to its budget's owner as the node sees it.
    private mutating func send(_ n: Int) {
        var acquires: [String: [AcquireRequest]] = [:]
        var releases: [String: [ReleaseRequest]] = [:]
        for m in nodes[n].poll(now: now) {
            switch m {
            case .acquire(let r): acquires[target(n, r.budget), default: []].append(r)
            case .release(let r): releases[target(n, r.budget), default: []].append(r)
            }
        }
        for (c, rs) in releases.sorted(by: { $0.key < $1.key }) { schedule(.release(to: c, node: n, rs)) }
        for (c, rs) in acquires.sorted(by: { $0.key < $1.key }) { schedule(.acquire(to: c, node: n, rs)) }
    }

    private func target(_ n: Int, _ b: BudgetID) -> String {
        redirects[n][b] ?? Rendezvous.owner(of: b, among: nodeView[n])!.name
    }

    private mutating func deliver() {
        while let i = queue.indices.filter({ queue[$0].at <= now }).min(by: { (queue[$0].at, queue[$0].seq) < (queue[$1].at, queue[$1].seq) }) {
            let e = queue.remove(at: i).event
            handle(e)
        }
    }

    private mutating func handle(_ e: Event) {
        switch e {
        case .acquire(let c, let n, let rs):
            guard !down.contains(c) else { return }
            let (answers, actions) = coordinators[c]!.acquire(rs, from: NodeID("n\(n)"), now: now)
            if !answers.isEmpty { schedule(.answers(node: n, answers)) }
            perform(c, actions)
        case .release(let c, let n, let rs):
            guard !down.contains(c) else { return }
            perform(c, coordinators[c]!.release(rs, from: NodeID("n\(n)"), now: now))
        case .answers(let n, let answers):
            for a in answers {
                switch a {
                case .grant(let g): _ = nodes[n].receive(g, now: now)
                case .redirect(_, let b, let owner):
                    redirects[n][b] = owner.name
                    nodes[n].retrySoon(b, after: .milliseconds(20), now: now)
                case .unavailable(_, let b, let after): nodes[n].retrySoon(b, after: max(.milliseconds(10), after), now: now)
                case .retryLater(let g, let after): nodes[n].retrySoon(g.budget, after: max(.milliseconds(10), after), now: now)
                case .unknownBudget, .stale: break
                }
            }
        case .members(let n, let list):
            guard nodeView[n] != list, !deaf.contains(n) else { return }
            let moved = Set(budgets.map(\.id).filter { Rendezvous.owner(of: $0, among: nodeView[n])?.name != Rendezvous.owner(of: $0, among: list)?.name })
            nodeView[n] = list
            redirects[n] = [:]
            nodes[n].ownersChanged(moved, now: now)
            nodes[n].retryAllPending(now: now)
        case .ledgerWrite(let c, let changes, let held):
            let accepted = ledgerDown ? nil : changes.map { apply($0) }
            schedule(.recorded(to: c, changes, held: held, accepted: accepted))
        case .recorded(let c, let changes, let held, let accepted):
            guard !down.contains(c) else { return }
            perform(c, coordinators[c]!.recorded(changes, held: held, accepted: accepted))
        case .ledgerLoad(let c, let b):
            guard !down.contains(c), let window = coordinators[c]!.loadWindow(b, now: now) else { return }
            if ledgerDown { return schedule(.ledgerLoad(to: c, b), after: .milliseconds(50)) }
            if !coordinators[c]!.loaded(b, row: ledger[b]?[window] ?? LedgerCounters(), windowStart: window, now: now) {
                schedule(.ledgerLoad(to: c, b)) // the window rolled over while it was read
            }
        }
    }

    /// The databases' conditional update: grants only while `granted − released ≤ allowance`;
    /// a refused change still records its releases and reports.
    private mutating func apply(_ c: LedgerChange) -> Bool {
        var row = ledger[c.budget]?[c.windowStart] ?? LedgerCounters()
        let d = c.delta
        if row.granted + d.granted - row.released - d.released <= c.allowance {
            row += d
            ledger[c.budget, default: [:]][c.windowStart] = row
            return true
        }
        row.released += d.released
        row.consumed += d.consumed
        row.expired += d.expired
        ledger[c.budget, default: [:]][c.windowStart] = row
        return d.granted <= 0
    }

    private mutating func perform(_ c: String, _ actions: [CoordinatorMachine.Action]) {
        for a in actions {
            switch a {
            case .push(let pushes):
                for p in pushes {
                    guard let n = nodes.indices.first(where: { nodes[$0].settings.node == p.node }) else { continue }
                    schedule(.answers(node: n, [.grant(p.grant)]))
                }
            case .send(let node, let answers):
                guard let n = nodes.indices.first(where: { nodes[$0].settings.node == node }) else { continue }
                schedule(.answers(node: n, answers))
            case .writeLedger(let changes, let held): schedule(.ledgerWrite(from: c, changes, held: held))
            case .loadLedger(let b): schedule(.ledgerLoad(to: c, b))
            case .members(let list, _):
                for n in nodes.indices { schedule(.members(node: n, list)) }
            case .softLimitCrossed: break
            }
        }
    }
}
