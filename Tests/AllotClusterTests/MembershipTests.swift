import AllotCluster
import AllotCore
import Testing

/// Membership in virtual time: a cluster of state machines and a lossy network between them.
struct VirtualCluster {
    var nodes: [MemberID: Membership] = [:]
    var down: Set<MemberID> = []
    var inFlight: [(at: Instant, env: Membership.Envelope)] = []
    var now = Instant(seconds: 1_000)
    var loss: Double
    var rng: UInt64
    let latency: Duration = .milliseconds(5)
    /// Tick a member only once its `nextWake` is due (as `ClusterService` does), instead of
    /// every step; and check that a tick before it would have done nothing.
    var wakeDriven = false
    var ticks = 0
    var earlyTicksWithEffect = 0

    init(size: Int, loss: Double = 0, seed: UInt64 = 1, settings: Membership.Settings = .init()) {
        self.loss = loss
        rng = seed
        let ids = (0..<size).map { MemberID(name: "c\($0)", address: "10.0.0.\($0):7400") }
        for (i, id) in ids.enumerated() {
            var m = Membership(me: id, settings: settings, seed: seed &* 31 &+ UInt64(i), now: now)
            send(m.join(seeds: [ids[0]], now: now))
            nodes[id] = m
        }
    }

    mutating func unit() -> Double {
        rng &+= 0x9E37_79B9_7F4A_7C15
        var z = rng
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
    }

    mutating func send(_ envs: [Membership.Envelope]) {
        for e in envs where unit() >= loss { inFlight.append((now + latency, e)) }
    }

    /// Advances virtual time in 10 ms steps.
    mutating func run(for d: Duration) {
        let end = now + d
        while now < end {
            now = now + .milliseconds(10)
            let due = inFlight.filter { $0.at <= now }
            inFlight.removeAll { $0.at <= now }
            for (_, e) in due where !down.contains(e.to) && !down.contains(e.from) {
                if var m = nodes[e.to] {
                    let out = m.receive(e, now: now)
                    nodes[e.to] = m
                    send(out)
                }
            }
            for id in nodes.keys.sorted() where !down.contains(id) {
                var m = nodes[id]!
                if wakeDriven && now < m.nextWake(now: now) {
                    var probe = m
                    let out = probe.tick(now: now)
                    if !out.isEmpty || probe.live != m.live || probe.healthyMembers(now: now) != m.healthyMembers(now: now) {
                        earlyTicksWithEffect += 1
                    }
                    continue
                }
                ticks += 1
                let out = m.tick(now: now)
                nodes[id] = m
                send(out)
            }
        }
    }

    func view(_ of: MemberID) -> [MemberID] { nodes[of]!.live }

    /// Crashes `victim`, runs until every other member declares it dead (at most 30 s), and
    /// returns how long that took (nil: never).
    mutating func crashUntilDead(_ victim: MemberID) -> Duration? {
        down.insert(victim)
        let crashedAt = now
        for _ in 0..<300 {
            run(for: .milliseconds(100))
            if ids.filter({ $0 != victim }).allSatisfy({ nodes[$0]!.state(of: victim) == .dead }) { return now - crashedAt }
        }
        return nil
    }
    var ids: [MemberID] { nodes.keys.sorted() }
}

@Suite("Cluster membership (SWIM) in virtual time")
struct MembershipTests {
    @Test("members joining through one seed converge to the same view")
    func convergence() {
        var c = VirtualCluster(size: 7)
        c.run(for: .seconds(10))
        for id in c.ids { #expect(c.view(id) == c.ids, "\(id) sees \(c.view(id))") }
    }

    @Test("a crashed member is suspected, then declared dead by everyone within period + suspicion timeout (+ dissemination)")
    func crashDetection() {
        var c = VirtualCluster(size: 6)
        c.run(for: .seconds(10))
        let victim = c.ids[3]
        let t = c.crashUntilDead(victim)
        // Worst case: up to n-1 periods until someone probes it, + 1 period, + suspicion 3 s, + gossip.
        #expect(t.map { $0 <= .seconds(12) } == true, "detected after \(t.map { "\($0)" } ?? "never")")
        for id in c.ids where id != victim { #expect(!c.view(id).contains(victim)) }
    }

    @Test("driven only at nextWake: a tick before it does nothing, a crash is still detected in time, and members tick far less often")
    func wakeDriven() {
        var stepped = VirtualCluster(size: 6, loss: 0.05, seed: 3)
        var woken = VirtualCluster(size: 6, loss: 0.05, seed: 3)
        woken.wakeDriven = true
        stepped.run(for: .seconds(10))
        woken.run(for: .seconds(10))
        let (steppedTicks, wokenTicks) = (stepped.ticks, woken.ticks)
        for id in woken.ids { #expect(woken.view(id).count == 6, "\(id) sees \(woken.view(id).count)") }
        let took = woken.crashUntilDead(woken.ids[2])
        #expect(took.map { $0 <= .seconds(12) } == true, "detected after \(took.map { "\($0)" } ?? "never")")
        #expect(woken.earlyTicksWithEffect == 0, "a tick before nextWake changed something \(woken.earlyTicksWithEffect) times")
        // 10 s at 10 ms steps is 1,000 ticks per member; a wake per period and per timeout is far fewer.
        #expect(steppedTicks == 6 * 1_000)
        #expect(wokenTicks > 0 && wokenTicks < steppedTicks / 5, "ticks in 10 s: \(wokenTicks) at nextWake, \(steppedTicks) every 10 ms")
    }

    @Test("a live member refutes a false suspicion and is never declared dead")
    func refutation() {
        var c = VirtualCluster(size: 5)
        c.run(for: .seconds(8))
        let target = c.ids[2], liar = c.ids[0]
        let inc = c.nodes[target]!.incarnation
        // The liar tells everyone the target is suspect.
        for id in c.ids where id != liar {
            var m = c.nodes[id]!
            let out = m.receive(Membership.Envelope(from: liar, to: id, message: .ping(seq: 0),
                                                    updates: [.init(member: target, incarnation: inc, state: .suspect)]),
                                now: c.now)
            c.nodes[id] = m
            c.send(out)
        }
        c.run(for: .seconds(10))
        #expect(c.nodes[target]!.incarnation > inc)
        for id in c.ids { #expect(c.nodes[id]!.state(of: target) == .alive, "\(id): \(String(describing: c.nodes[id]!.state(of: target)))") }
    }

    @Test("with 10% message loss, indirect probes keep false deaths at zero over 300 periods")
    func lossyNetwork() {
        var c = VirtualCluster(size: 8, loss: 0.10, seed: 7)
        c.run(for: .seconds(300))
        for id in c.ids {
            for other in c.ids { #expect(c.nodes[id]!.state(of: other) != .dead, "\(id) declared \(other) dead") }
        }
    }

    @Test("a member that leaves is marked left everywhere at once, and a restarted one comes back")
    func leaveAndRejoin() {
        var c = VirtualCluster(size: 5)
        c.run(for: .seconds(8))
        let leaver = c.ids[4]
        var m = c.nodes[leaver]!
        c.send(m.leave())
        c.nodes[leaver] = m
        c.run(for: .seconds(2))
        c.down.insert(leaver)
        c.run(for: .seconds(1))
        for id in c.ids where id != leaver { #expect(c.nodes[id]!.state(of: leaver) == .left) }
        // It restarts (incarnation 0) and joins again: it hears it left, refutes, and is back.
        c.down.remove(leaver)
        var fresh = Membership(me: leaver, seed: 99, now: c.now)
        c.send(fresh.join(seeds: [c.ids[0]], now: c.now))
        c.nodes[leaver] = fresh
        c.run(for: .seconds(15))
        for id in c.ids { #expect(c.view(id).contains(leaver), "\(id)") }
    }
}

@Suite("Budget ownership (rendezvous hashing)")
struct RendezvousTests {
    let members = (0..<3).map { MemberID(name: "c\($0)", address: "h\($0):7400") }

    @Test("ownership is balanced, stable, and only a departed member's budgets move")
    func ownership() {
        let budgets = (0..<3000).map { BudgetID("pro.tpm/consumer=u\($0)") }
        var counts: [MemberID: Int] = [:]
        for b in budgets { counts[Rendezvous.owner(of: b, among: members)!, default: 0] += 1 }
        for m in members { #expect((800...1200).contains(counts[m, default: 0]), "\(counts)") }
        // The same answer whatever the order of the list.
        for b in budgets.prefix(100) {
            #expect(Rendezvous.owner(of: b, among: members) == Rendezvous.owner(of: b, among: members.reversed()))
        }
        let survivors = Array(members.dropLast())
        for b in budgets {
            let before = Rendezvous.owner(of: b, among: members)!
            let after = Rendezvous.owner(of: b, among: survivors)!
            if before != members[2] { #expect(after == before) }
        }
        #expect(Rendezvous.owner(of: "x", among: []) == nil)
    }
}
