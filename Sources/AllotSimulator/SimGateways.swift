import AllotCore

/// The gateway side of the lease strategies (`allot`, `allot-regions`): a real `Enforcer` per
/// node, the reservations each holds for requests in flight, and what happens on an arrival,
/// at a request's end and on a node's timer.
struct SimGateways {
    var nodes: [Enforcer]
    let budgets: BudgetSet
    /// Requests hold their bound until they end (token requests streamed for seconds,
    /// concurrency permits), instead of being charged at once.
    let holds: Bool
    let index: [NodeID: Int32]
    private var inFlight: [Int32: Reservation] = [:]
    private var nodeInFlight: [[Int32]]

    /// `settings(n)`: node n's enforcer settings.
    init(scenario: Scenario, settings: (Int) -> EnforcerSettings) {
        var nodes: [Enforcer] = []
        var set: BudgetSet?
        var index: [NodeID: Int32] = [:]
        for n in 0..<scenario.nodes {
            var e = try! Enforcer(settings: settings(n))
            set = try! BudgetSet(scenario.budgets.map { e.register($0) })
            index[e.settings.node] = Int32(n)
            nodes.append(e)
        }
        self.nodes = nodes
        self.index = index
        budgets = set!
        holds = scenario.name == .tokens || scenario.budgets.contains { $0.kind.isConcurrency }
        nodeInFlight = [[Int32]](repeating: [], count: scenario.nodes)
    }

    /// Decides arrival `i` at `t`; `endsAt` is when its reservation is to be settled (nil when
    /// denied or charged at once).
    mutating func arrive(_ i: Int, _ a: Arrival, at t: Int64, now: Instant) -> (outcome: Outcome, endsAt: Int64?) {
        let n = Int(a.node)
        guard holds else {
            return (Outcome(time: t, admitted: nodes[n].admit(a.cost, on: budgets, now: now).isAdmitted, end: t), nil)
        }
        guard case .admitted(let r) = nodes[n].reserve(a.bound, on: budgets, now: now) else {
            return (Outcome(time: t, admitted: false, end: t), nil)
        }
        inFlight[Int32(i)] = r
        nodeInFlight[n].append(Int32(i))
        return (Outcome(time: t, admitted: true, end: t + a.duration), t + a.duration)
    }

    /// Request `i` ended: settle its reservation to its real cost (unless it was aborted).
    mutating func complete(_ i: Int32, _ a: Arrival, now: Instant) {
        guard let r = inFlight.removeValue(forKey: i) else { return }
        nodes[Int(a.node)].settle(r, actual: a.cost, now: now)
    }

    /// Node `n`'s timer: expire its leases. A concurrency lease that ended with requests in
    /// flight aborts them (their outcome ends at `t`): the coordinator hands their permits on.
    mutating func tick(_ n: Int, at t: Int64, now: Instant, outcomes: inout [Outcome]) {
        for case .leaseExpired(_, let permits) in nodes[n].tick(now: now) where permits > 0 {
            for i in nodeInFlight[n] where inFlight.removeValue(forKey: i) != nil { outcomes[Int(i)].end = t }
        }
        nodeInFlight[n].removeAll { inFlight[$0] == nil }
    }
}
