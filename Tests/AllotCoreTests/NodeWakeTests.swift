import Testing
@testable import AllotCore

/// `Enforcer.nextWake` in virtual time: three nodes share a rate, a quota and a concurrency
/// budget through busy and idle phases, with the coordinator's pushes delivered. One fleet
/// polls every 10 ms (as the lease client did); the other only when `nextWake` is due (never
/// closer than 10 ms, at least once a second) or when a request sets `wantsPoll` — and every
/// millisecond checks that a poll before its wake-up would have sent nothing.
@Suite("Node wake-ups (virtual time)")
struct NodeWakeTests {
    struct Fleet {
        var nodes: [Enforcer] = []
        var wake: [Instant]
        /// The machine's own wake-up (before the 10 ms spacing and the 1 s guard).
        var due: [Instant]
        var why: [String: Int] = [:]
        var alloc: Allocator
        var set: BudgetSet!
        var held: [[Reservation]] = [[], [], []]
        var polls = 0
        var idlePolls = 0
        var admitted = 0
        var earlyPollsThatSent: [String] = []
        let wakeDriven: Bool

        init(specs: [BudgetSpec], wakeDriven: Bool, now: Instant) throws {
            self.wakeDriven = wakeDriven
            alloc = try Allocator(budgets: specs, now: now)
            wake = Array(repeating: now, count: 3)
            due = wake
            for n in 0..<3 {
                var e = try Enforcer(settings: EnforcerSettings(node: NodeID("n\(n)")))
                set = try BudgetSet(specs.map { e.register($0) })
                nodes.append(e)
            }
        }

        mutating func request(_ k: Int, hold: Bool, now: Instant) {
            let cost = Cost(requests: 1, tokens: 50)
            if case .admitted(let r) = nodes[k].reserve(cost, on: set, now: now) {
                admitted += 1
                if hold { held[k].append(r) } else { nodes[k].settle(r, actual: Cost(requests: 1, tokens: 30), now: now) }
            }
            if nodes[k].wantsPoll { (wake[k], due[k]) = (min(wake[k], now), now) }
        }

        mutating func finishHeld(_ k: Int, now: Instant) {
            for r in held[k] { nodes[k].settle(r, actual: Cost(requests: 1, tokens: 30), now: now) }
            held[k] = []
            if nodes[k].wantsPoll { (wake[k], due[k]) = (min(wake[k], now), now) }
        }

        mutating func step(now: Instant, idle: Bool) {
            _ = alloc.tick(now: now)
            for p in alloc.takePushes() {
                guard let k = Int(p.node.rawValue.dropFirst()) else { continue }
                _ = nodes[k].receive(p.grant, now: now)
                due[k] = min(due[k], nodes[k].nextWake(now: now))
                wake[k] = min(wake[k], due[k])
            }
            for k in 0..<3 {
                let isDue = wakeDriven ? now >= wake[k] : now.nanoseconds / 1_000_000 % 10 == 0
                if !isDue {
                    guard now < due[k] else { continue } // held back by the 10 ms spacing only
                    var probe = nodes[k]
                    _ = probe.tick(now: now)
                    let out = probe.poll(now: now)
                    if !out.isEmpty, earlyPollsThatSent.count < 5 { earlyPollsThatSent.append("\(now): \(out)") }
                    continue
                }
                polls += 1
                if idle {
                    idlePolls += 1
                    var e = nodes[k]
                    for (i, sl) in e.slices.enumerated() {
                        var d = sl.demand, a = sl.admitted
                        let tags = [(d.average(now: now) > 0, "demand"), (a.average(now: now) > 0, "admitted"), (sl.needsAck, "ack"), (sl.reportOwner, "owner"),
                                    (now - sl.heldBackAt < e.settings.refreshInterval, "heldBack"), (sl.kind == .bucket && sl.reportedDemand > 1, "drop"),
                                    (sl.pending != nil, "pending"), (e.wantsPoll, "wants"), (sl.leaseID != 0, "lease"), (sl.reserved > 0, "reserved")]
                        why["\(i):" + tags.filter(\.0).map(\.1).joined(separator: ","), default: 0] += 1
                    }
                    _ = e.nextWake(now: now)
                }
                _ = nodes[k].tick(now: now)
                for m in nodes[k].poll(now: now) {
                    switch m {
                    case .acquire(let req):
                        if case .granted(let g) = alloc.acquire(req, now: now) { _ = nodes[k].receive(g, now: now) }
                    case .release(let rel): _ = alloc.release(rel, now: now)
                    }
                }
                let next = nodes[k].nextWake(now: now)
                due[k] = next
                wake[k] = min(max(next, now + .milliseconds(10)), now + .seconds(1))
            }
        }
    }

    @Test("a poll before nextWake sends nothing; quiet nodes poll about once a second instead of 100 times, and admit as much")
    func wakeDriven() throws {
        let specs = [rateBudget("r", limit: 20_000, burst: 5_000), quotaBudget("q", allowance: 1_000_000),
                     concurrencyBudget("c", limit: 6)]
        let start = at(1_000)
        var stepped = try Fleet(specs: specs, wakeDriven: false, now: start)
        var woken = try Fleet(specs: specs, wakeDriven: true, now: start)
        var rng = SeededRandom(seed: 11)
        // 4 s busy, 6 s idle, 3 s busy, 6 s idle, then 1 s of requests all held (long streams)
        // and 4 s without requests, the held ones settled 2 s in (with nothing admitted for a
        // second, the permits and tokens they give back must be released at once): 1 ms steps.
        let phases: [(ms: Int, busy: Bool, holdAll: Bool)] = [(4_000, true, false), (6_000, false, false), (3_000, true, false),
                                                              (6_000, false, false), (1_000, true, true), (4_000, false, false)]
        var t = 0
        for phase in phases {
            for tick in 0..<phase.ms {
                t += 1
                let now = start + .milliseconds(Int64(t))
                if phase.busy && rng.next() % 4 == 0 {
                    let k = Int(rng.next() % 3), hold = phase.holdAll || rng.next() % 3 == 0
                    stepped.request(k, hold: hold, now: now)
                    woken.request(k, hold: hold, now: now)
                }
                if phase.busy && !phase.holdAll && t % 40 == 0 || !phase.busy && tick == 2_000 {
                    for k in 0..<3 {
                        stepped.finishHeld(k, now: now)
                        woken.finishHeld(k, now: now)
                    }
                }
                // Idle: 1.5 s after the last request (the demand meters cover the last second).
                let quiet = !phase.busy && tick >= 1_500
                stepped.step(now: now, idle: quiet)
                woken.step(now: now, idle: quiet)
            }
        }
        #expect(woken.earlyPollsThatSent.isEmpty, "polls before nextWake that had something to send: \(woken.earlyPollsThatSent)")
        // 11.5 quiet seconds × 3 nodes: 3,450 polls at 10 ms; at nextWake, about one per node
        // and second (the 1 s guard) plus the idle releases, the leases' ends and the settlements.
        #expect(stepped.idlePolls >= 3_400)
        #expect(woken.idlePolls <= 12 * 3 * 3, "idle polls: \(woken.idlePolls) at nextWake, \(stepped.idlePolls) every 10 ms; \(woken.why)")
        #expect(woken.polls < stepped.polls, "polls: \(woken.polls) vs \(stepped.polls)")
        // A request that leaves a slice low wakes the poll at once rather than at the next
        // 10 ms tick: at least as much is admitted (measured: 1,383 against 1,288).
        #expect(Double(woken.admitted) >= 0.97 * Double(stepped.admitted), "admitted \(woken.admitted) at nextWake vs \(stepped.admitted) every 10 ms")
    }
}
