import AllotCore

/// The coordinator side of a lease strategy (`allot`: one coordinator; `allot-regions`: two
/// regional coordinators leasing from a global one): what happens to a node's message, and
/// to the side's own events (ticks, messages between coordinators).
protocol CoordinatorSide {
    associatedtype Event
    /// Schedules the side's first events (the loop has scheduled the nodes' timers).
    mutating func start(_ loop: inout FleetLoop<Self>)
    /// Node `n` sent `m` at `t`: count it and schedule its arrival (or lose it).
    mutating func sent(_ m: Enforcer.Outgoing, from n: Int32, at t: Int64, _ loop: inout FleetLoop<Self>)
    mutating func handle(_ e: Event, at t: Int64, now: Instant, _ loop: inout FleetLoop<Self>)
    /// The first broken invariant of the coordinators at `t`, said in full (property tests).
    func violation(at t: Int64) -> String?
}

/// The one event loop of the lease strategies, in virtual time: arrivals decided by the
/// nodes' real `Enforcer`s, requests ending, node timers, grants reaching nodes; everything
/// else is the coordinator side's.
struct FleetLoop<Side: CoordinatorSide> {
    enum Event {
        case complete(Int32)
        case toNode(Int32, Grant)
        case nodeTimer(Int32)
        case side(Side.Event)
    }

    let scenario: Scenario
    let trace: [Arrival]
    let checkEveryStep: Bool
    var fleet: SimGateways
    var rng: SimRandom
    var messages = 0
    var crossing = 0
    var violation: String?
    private var queue: Replay<Event>
    private var outcomes: [Outcome]
    private let timerEvery: Int64 = 20_000_000

    init(scenario: Scenario, trace: [Arrival], seed: UInt64, checkEveryStep: Bool, fleet: SimGateways) {
        self.scenario = scenario
        self.trace = trace
        self.checkEveryStep = checkEveryStep
        self.fleet = fleet
        rng = SimRandom(seed: seed)
        queue = Replay<Event>(trace: trace, end: scenario.duration.nanoseconds)
        outcomes = [Outcome](repeating: .undecided, count: trace.count)
    }

    mutating func schedule(_ t: Int64, _ e: Event) { queue.schedule(t, e) }
    mutating func schedule(_ t: Int64, _ e: Side.Event) { queue.schedule(t, .side(e)) }

    /// Records the coordinators' first broken invariant (property tests only).
    mutating func check(_ side: Side, at t: Int64) {
        guard checkEveryStep, violation == nil else { return }
        violation = side.violation(at: t)
    }

    /// Runs to the end of the scenario; the outcome of every arrival.
    mutating func run(_ side: inout Side) -> [Outcome] {
        let epoch = scenario.epoch
        for n in 0..<scenario.nodes { queue.schedule(Int64(n) * timerEvery / Int64(scenario.nodes), .nodeTimer(Int32(n))) }
        side.start(&self)
        while let (t, step) = queue.next() {
            let now = epoch + .nanoseconds(t)
            guard case .event(let ev) = step else {
                guard case .arrival(let i) = step else { continue }
                let a = trace[i]
                let n = Int(a.node)
                let (outcome, endsAt) = fleet.arrive(i, a, at: t, now: now)
                outcomes[i] = outcome
                if let endsAt { queue.schedule(endsAt, .complete(Int32(i))) }
                if fleet.nodes[n].wantsPoll { send(a.node, t, &side) }
                if checkEveryStep, violation == nil, let v = fleet.nodes[n].checkInvariants() { violation = "t=\(t): \(v)" }
                continue
            }
            switch ev {
            case .complete(let i):
                fleet.complete(i, trace[Int(i)], now: now)
            case .toNode(let n, let g):
                _ = fleet.nodes[Int(n)].receive(g, now: now)
                if fleet.nodes[Int(n)].wantsPoll { send(n, t, &side) }
            case .nodeTimer(let n):
                fleet.tick(Int(n), at: t, now: now, outcomes: &outcomes)
                send(n, t, &side)
                queue.schedule(t + timerEvery, .nodeTimer(n))
            case .side(let e):
                side.handle(e, at: t, now: now, &self)
            }
        }
        for i in outcomes.indices where outcomes[i].time < 0 { outcomes[i] = Outcome(time: trace[i].time, admitted: false, end: trace[i].time) }
        return outcomes
    }

    /// Node `n`'s messages at `t`, handed to the coordinator side.
    private mutating func send(_ n: Int32, _ t: Int64, _ side: inout Side) {
        for m in fleet.nodes[Int(n)].poll(now: scenario.epoch + .nanoseconds(t)) {
            messages += 1
            side.sent(m, from: n, at: t, &self)
        }
    }
}
