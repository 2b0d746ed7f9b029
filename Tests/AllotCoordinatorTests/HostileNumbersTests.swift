import AllotCluster
import AllotCore
import AllotCoordinator
import AllotTransport
import AllotWire
import Testing

/// Every count a peer sends, at every boundary (0, −1, Int64.min/max, and UInt64.max where
/// the field is unsigned), through the session, the coordinator and the allocator, and every
/// count a coordinator sends through a node's enforcer: refused with a named error or clamped,
/// never a trap, and the books still balance.
@Suite("Hostile numbers at every field")
struct HostileNumbersTests {
    static let signed: [Int64] = [0, -1, 1, .min, .max, .max - 1, Checked.maxUnits, Checked.maxUnits + 1]
    static let unsigned: [UInt64] = [0, 1, .max, .max - 1, UInt64(Int64.max) + 1]
    static let budgets: [BudgetSpec] = [
        try! BudgetSpec(id: "r", unit: .requests, kind: .rate(limit: 1000, period: .seconds(1), burst: 1000)),
        try! BudgetSpec(id: "q", unit: .tokens, kind: .quota(allowance: 1_000_000, window: try! CalendarWindow(.minute))),
        try! BudgetSpec(id: "c", unit: .requests, kind: .concurrency(limit: 4)),
    ]

    /// Acquire fields that carry counts (refused outside 0...2^62), then the ids (only compared).
    nonisolated(unsafe) static let acquireCounts: [WritableKeyPath<Allot_V1_Acquire, Int64>] = [
        \.want, \.demandRate, \.consumed, \.released, \.holding, \.available, \.rateInUse, \.capacityInUse,
    ]
    nonisolated(unsafe) static let acquireIDs: [WritableKeyPath<Allot_V1_Acquire, UInt64>] = [\.requestID, \.leaseID, \.epoch, \.appliedSequence]

    func session() throws -> Session {
        var s = Session(identity: try PeerIdentity(trustDomain: "t", role: .node, name: "n"), now: Instant(seconds: 1))
        _ = s.frameReceived(.hello(name: "n"), now: Instant(seconds: 1))
        return s
    }

    func acquire(_ budget: String, request: UInt64, lease: UInt64 = 0) -> Allot_V1_Acquire {
        var a = Allot_V1_Acquire()
        a.requestID = request
        a.budget = budget
        a.want = 10
        a.demandRate = 10
        a.leaseID = lease
        return a
    }

    @Test("the session refuses counts outside 0...2^62 by name, and passes the rest")
    func sessionRefuses() throws {
        for path in Self.acquireCounts {
            for v in Self.signed {
                var s = try session()
                var a = acquire("q", request: 1)
                a[keyPath: path] = v
                var f = Allot_V1_Frame()
                f.acquire.items = [a]
                let action = s.frameReceived(f, now: Instant(seconds: 2))
                if (0...Checked.maxUnits).contains(v) {
                    guard case .acquire = action else { Issue.record("\(path) = \(v) refused: \(action)"); continue }
                } else {
                    guard case .reject(.protocolViolation, let message, _) = action else { Issue.record("\(path) = \(v) passed"); continue }
                    #expect(message.contains("= \(v)"), "\(message)")
                }
            }
        }
        for v in Self.signed {
            var s = try session()
            var r = Allot_V1_Release()
            r.budget = "q"
            r.consumed = v
            r.released = v
            var f = Allot_V1_Frame()
            f.release.items = [r]
            let refused: Bool
            if case .reject(.protocolViolation, _, _) = s.frameReceived(f, now: Instant(seconds: 2)) { refused = true } else { refused = false }
            #expect(refused == !(0...Checked.maxUnits).contains(v), "release \(v)")
        }
    }

    /// The coordinator's and allocator's own answer when a frame gets past the session anyway
    /// (an in-process caller, a future session bug): clamped, never a trap.
    @Test("the coordinator and the allocator clamp what reaches them: no trap, books balance, caps hold")
    func coreClamps() throws {
        let t0 = Instant(seconds: 10)
        let core = try CoordinatorCore(settings: .init(), budgets: Self.budgets, now: t0)
        var alloc = try Allocator(budgets: Self.budgets, now: t0)
        var request: UInt64 = 1
        for budget in Self.budgets {
            for path in Self.acquireCounts {
                for v in Self.signed {
                    // A lease first, then the hostile value on it (and on a fresh request).
                    request += 1
                    let first = acquire(budget.id.rawValue, request: request)
                    let lease = core.acquire([first], from: "n", now: t0).first.flatMap { f -> UInt64? in
                        if case .grants(let g) = f.body { return g.items.first?.leaseID } else { return nil }
                    } ?? 0
                    request += 1
                    var a = acquire(budget.id.rawValue, request: request, lease: lease)
                    a[keyPath: path] = v
                    _ = core.acquire([a], from: "n", now: t0)
                    _ = alloc.acquire(AcquireRequest(wire: a, node: "n"), now: t0)
                    var r = Allot_V1_Release()
                    r.budget = budget.id.rawValue
                    r.leaseID = lease
                    r.consumed = v
                    r.released = v
                    core.release([r], from: "n", now: t0)
                    _ = alloc.release(ReleaseRequest(wire: r, node: "n"), now: t0)
                    #expect(alloc.checkInvariants() == nil, "\(budget.id) \(path) = \(v): \(alloc.checkInvariants() ?? "")")
                    if let st = core.allocatorStatus(budget.id) {
                        #expect(st.outstanding <= budget.kind.ceiling, "\(budget.id) \(path) = \(v): \(st.outstanding) out")
                    }
                }
            }
            for path in Self.acquireIDs {
                for v in Self.unsigned {
                    var a = acquire(budget.id.rawValue, request: request)
                    a[keyPath: path] = v
                    _ = core.acquire([a], from: "m", now: t0)
                    _ = alloc.acquire(AcquireRequest(wire: a, node: "m"), now: t0)
                }
            }
        }
        _ = core.tick(now: t0 + .seconds(30))
        _ = alloc.tick(now: t0 + .seconds(30))
        #expect(alloc.checkInvariants() == nil)
    }

    @Test("learning mode adopts at most the budget's own size, whatever a node claims to hold")
    func adoptionIsBounded() throws {
        let t0 = Instant(seconds: 10)
        var alloc = try Allocator(budgets: Self.budgets, now: t0)
        for b in Self.budgets { _ = alloc.ownershipGained(b.id, epoch: 2, committed: 0, now: t0) }
        for (i, node) in ["a", "b", "c"].enumerated() {
            for b in Self.budgets {
                let req = AcquireRequest(requestID: UInt64(i + 1), node: NodeID(node), budget: b.id, want: 1, leaseID: 7,
                                         holding: .max, rateInUse: .max, capacityInUse: .max)
                _ = alloc.acquire(req, now: t0)
            }
        }
        #expect(alloc.checkInvariants() == nil)
        #expect(alloc.status("c")!.outstanding <= 4, "a concurrency budget of 4 adopted \(alloc.status("c")!.outstanding)")
    }

    @Test("a node clamps whatever a coordinator grants: amounts, rates, capacities, TTLs")
    func enforcerClamps() throws {
        for b in Self.budgets {
            for v in Self.signed {
                var e = try Enforcer(settings: EnforcerSettings(node: "n"))
                let set = try BudgetSet([e.register(b)])
                _ = e.reserve(Cost(requests: 1, tokens: 1), on: set, now: Instant(seconds: 1))
                guard case .acquire(let req)? = e.poll(now: Instant(seconds: 1)).first else { continue }
                var g = Allot_V1_Grant()
                g.requestID = req.requestID
                g.budget = b.id.rawValue
                g.leaseID = 1
                g.epoch = 1
                g.amount = v
                g.rate = v
                g.capacity = v
                g.ttlNs = v
                g.retryAfterNs = v
                _ = e.receive(Grant(wire: g), now: Instant(seconds: 1))
                if case .admitted(let r) = e.reserve(Cost(requests: 1, tokens: 1), on: set, now: Instant(seconds: 1.01)) {
                    e.settle(r, actual: Cost(requests: .max, tokens: .max), now: Instant(seconds: 1.02))
                }
                for ms in stride(from: 1_030, through: 1_500, by: 50) { _ = e.poll(now: Instant(seconds: Double(ms) / 1_000)) }
                _ = e.shutdown(now: Instant(seconds: 2))
            }
        }
    }

    @Test("gossip: an incarnation near UInt64.max is refused at the wire and ignored by membership")
    func incarnations() throws {
        let me = MemberID(name: "c1", address: "a:1"), peer = MemberID(name: "c2", address: "b:1")
        for v in Self.unsigned {
            var g = Allot_V1_Gossip()
            g.from = peer.wire
            g.to = me.wire
            g.kind = .ping
            g.sequence = 1
            var u = Allot_V1_MemberUpdate()
            u.member = me.wire
            u.incarnation = v
            u.state = .suspect
            g.updates = [u]
            let envelope = Membership.Envelope(wire: g)
            #expect((envelope == nil) == (v > Membership.maxIncarnation), "incarnation \(v)")
            var m = Membership(me: me, seed: 1, now: Instant(seconds: 1))
            let direct = Membership.Envelope(from: peer, to: me, message: .ping(seq: 1),
                                              updates: [Membership.Update(member: me, incarnation: v, state: .suspect)])
            _ = m.receive(direct, now: Instant(seconds: 1))
            #expect(m.incarnation <= Membership.maxIncarnation + 1)
            _ = m.leave()
        }
    }
}
