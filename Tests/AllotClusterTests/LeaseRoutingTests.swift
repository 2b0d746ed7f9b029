import AllotCluster
import AllotCore
import Testing

/// The connection pool and the lease client's routing in virtual time: dials, generations,
/// backoff with a seeded jitter, redirects, member lists, heartbeats.
@Suite("Peer pool and lease routing (virtual time)")
struct LeaseRoutingTests {
    let t0 = Instant(seconds: 1_000)
    static let ids = (0..<3).map { MemberID(name: "c\($0)", address: "10.0.0.\($0):7400") }

    @Test("a dial is claimed once; a failed one backs off with jitter in [½, 1] of a doubling backoff, up to the maximum; a connection resets it")
    func backoff() {
        var s = PeerPool.Settings()
        s.minBackoff = .milliseconds(100)
        s.maxBackoff = .milliseconds(400)
        var p = PeerPool(settings: s, seed: 7)
        var now = t0
        var waits: [Duration] = []
        for _ in 0..<5 {
            let g = p.claim("a", now: now)!
            let twice = p.claim("a", now: now)
            #expect(twice == nil, "already being dialled")
            p.failed("a", generation: g, now: now)
            let until = p.peers["a"]!.notBefore
            let early = p.claim("a", now: until - .nanoseconds(1))
            #expect(early == nil, "still backing off")
            waits.append(until - now)
            now = until
        }
        let caps: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(400), .milliseconds(400)]
        for (w, cap) in zip(waits, caps) { #expect(w >= cap / 2 && w <= cap, "\(w) for a backoff of \(cap)") }
        // The same seed draws the same waits (the jitter is replayable).
        var again = PeerPool(settings: s, seed: 7)
        var t = t0
        for w in waits {
            let g = again.claim("a", now: t)!
            again.failed("a", generation: g, now: t)
            #expect(again.peers["a"]!.notBefore - t == w)
            t = again.peers["a"]!.notBefore
        }
        let g = p.claim("a", now: now)!
        let kept = p.connected("a", generation: g)
        #expect(kept)
        #expect(p.peers["a"]!.backoff == .milliseconds(100))
        let current = p.closed("a", generation: g, now: now)
        #expect(current)
        let atOnce = p.claim("a", now: now), later = p.claim("a", now: now + .milliseconds(100))
        #expect(atOnce == nil && later != nil, "min backoff after a close")
    }

    @Test("generations: a dial or a close reported after the peer was dropped is stale and changes nothing")
    func generations() {
        var p = PeerPool(seed: 1)
        let g1 = p.claim("a", now: t0)!
        let dropped = p.drop("a")
        #expect(dropped)
        let stale = p.connected("a", generation: g1)
        #expect(!stale, "a dial that finished after a drop is stale (closed by the shell)")
        let g2 = p.claim("a", now: t0)!
        let kept = p.connected("a", generation: g2)
        #expect(kept)
        let oldClose = p.closed("a", generation: g1, now: t0)
        #expect(!oldClose, "the close of an older connection")
        #expect(p.isConnected("a"))
        let close = p.closed("a", generation: g2, now: t0)
        #expect(close)
        #expect(!p.isConnected("a"))
    }

    @Test("routing: seeds until a member list, then the rendezvous owner among connected members; a redirect wins until the next list; a closed owner's budgets move on")
    func routing() {
        let seed = Self.ids[0].address
        var r = LeaseRouting(seeds: [seed, "gone:1"], seed: 3)
        var dials = r.dialsDue(now: t0)
        #expect(dials.map(\.address) == ["10.0.0.0:7400", "gone:1"])
        _ = r.connected(seed, generation: dials[0].generation)
        _ = r.connected("gone:1", generation: dials[1].generation)
        #expect(r.route("b") == "10.0.0.0:7400", "no member list: any connected coordinator")
        // A member list: all three are targets, a seed not in it is dropped.
        let change = r.membersChanged(Self.ids, budgets: ["b"])
        #expect(change != nil && change!.dropped == ["gone:1"] && change!.moved.isEmpty)
        let same = r.membersChanged(Self.ids.reversed(), budgets: ["b"])
        #expect(same == nil, "the same list in another order changes nothing")
        let more = r.dialsDue(now: t0)
        #expect(Set(more.map(\.address)) == Set(Self.ids[1...].map(\.address)))
        for d in more { _ = r.connected(d.address, generation: d.generation) }
        #expect(r.pool.connected == Self.ids.map(\.address))
        dials = [dials[0]] + more
        let budgets = (0..<30).map { BudgetID("b\($0)") }
        for b in budgets { #expect(r.route(b) == Rendezvous.owner(of: b, among: Self.ids)!.address) }
        // A redirect is followed (already connected: no dial) until the next member list.
        let b = budgets[0]
        let other = Self.ids.first { $0.address != r.route(b) }!.address
        let dial = r.redirected(b, to: other, now: t0)
        #expect(dial == nil)
        #expect(r.route(b) == other)
        // The owner of b1 closes: its budgets go to the next in rank among the connected.
        let owner = r.route(budgets[1])!
        let g = dials.first { $0.address == owner }!.generation
        let resend = r.closed(owner, generation: g, now: t0)
        #expect(resend, "members known: pending requests are re-sent")
        let rest = Self.ids.filter { $0.address != owner }
        #expect(r.route(budgets[1]) == Rendezvous.owner(of: budgets[1], among: rest)!.address)
        // A new list without it: budgets it owned are reported as moved; the redirect is gone.
        let moved = r.membersChanged(rest, budgets: budgets)!.moved
        #expect(moved == Set(budgets.filter { Rendezvous.owner(of: $0, among: Self.ids)!.address == owner }))
        #expect(r.redirects.isEmpty)
        // Batches: each message to its owner, in address order.
        let routes = r.routes(budgets.map { .release(ReleaseRequest(node: "n", budget: $0, leaseID: 1, consumed: 0, released: 0, final: false)) })
        #expect(routes.map(\.address) == routes.map(\.address).sorted())
        #expect(routes.reduce(0) { $0 + $1.messages.count } == budgets.count)
    }

    @Test("with no member reachable the seeds are targets again; heartbeats every interval")
    func fallbackAndHeartbeat() {
        var r = LeaseRouting(seeds: ["seed:1"], seed: 3)
        _ = r.membersChanged(Self.ids, budgets: [])
        #expect(Set(r.targets) == Set(Self.ids.map(\.address) + ["seed:1"]), "no member connected yet")
        let d = r.dialsDue(now: t0).first { $0.address == Self.ids[0].address }!
        _ = r.connected(d.address, generation: d.generation)
        #expect(Set(r.targets) == Set(Self.ids.map(\.address)))
        #expect(r.route("x") == Self.ids[0].address, "the only connected member")
        let beats = [r.heartbeatDue(now: t0), r.heartbeatDue(now: t0 + .seconds(4)), r.heartbeatDue(now: t0 + .seconds(5))]
        #expect(beats == [1, nil, 2])
    }

    @Test("nextDial: now for a target never dialled, the end of a failed dial's backoff, none while every target is connected or being dialled; nextHeartbeat follows the last beat")
    func wakeUps() {
        var r = LeaseRouting(seeds: ["a", "b"], seed: 5)
        #expect(r.nextDial(now: t0) == t0, "never dialled: at once")
        let due = r.dialsDue(now: t0)
        #expect(due.map(\.address) == ["a", "b"])
        #expect(r.nextDial(now: t0) == nil, "both being dialled")
        r.failed("a", generation: due[0].generation, now: t0)
        let backoffEnd = r.pool.peers["a"]!.notBefore
        #expect(backoffEnd > t0 && r.nextDial(now: t0) == backoffEnd)
        #expect(r.dialsDue(now: backoffEnd - .nanoseconds(1)).isEmpty, "nothing due before it")
        #expect(r.dialsDue(now: backoffEnd).map(\.address) == ["a"], "due at it")
        let kept = r.connected("b", generation: due[1].generation)
        #expect(kept)
        #expect(r.nextDial(now: backoffEnd) == nil)
        _ = r.heartbeatDue(now: t0)
        #expect(r.nextHeartbeat == t0 + r.settings.heartbeatInterval)
    }
}
