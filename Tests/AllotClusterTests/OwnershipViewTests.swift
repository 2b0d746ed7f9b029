import AllotCluster
import AllotCore
import Testing

/// Ownership rules in virtual time: quorum, formation, views that ended, members that came
/// back. No sockets, no clock: every change carries its instant.
@Suite("Ownership view (virtual time)")
struct OwnershipViewTests {
    static let ids = (0..<5).map { MemberID(name: "c\($0)", address: "10.0.0.\($0):7400") }
    static let ttl = Duration.seconds(5)
    let t0 = Instant(seconds: 1_000)

    /// A budget `owner` owns among `members` (found by trying names).
    static func budget(ownedBy owner: MemberID, among members: [MemberID], besides: Set<String> = []) -> BudgetID {
        for i in 0..<10_000 {
            let b = BudgetID("b\(i)")
            if !besides.contains(b.rawValue), Rendezvous.owner(of: b, among: members) == owner { return b }
        }
        fatalError("no budget for \(owner)")
    }

    @Test("nothing is served before the first view; the view is sorted and versioned")
    func formation() throws {
        var v = OwnershipView(me: Self.ids[0], quorum: 3, leaseTTL: Self.ttl)
        #expect(!v.serving && !v.formed && v.version == 0)
        let cChange = v.viewChanged([Self.ids[2], Self.ids[0], Self.ids[1]], now: t0)
        let c = try #require(cChange)
        #expect(c == .init(appeared: [], wasFormed: false, regained: false, quorate: true))
        #expect(v.serving && v.members == Array(Self.ids[0..<3]) && v.version == 1)
        let again = v.viewChanged([Self.ids[1], Self.ids[0], Self.ids[2]], now: t0 + .seconds(1))
        #expect(again == nil, "the same view again changes nothing")
    }

    @Test("the quorum counts healthy members: a minority stops serving, and regains it whole")
    func quorum() throws {
        var v = OwnershipView(me: Self.ids[0], quorum: 3, leaseTTL: Self.ttl)
        _ = v.viewChanged(Self.ids, now: t0)
        #expect(v.serving)
        // Two suspected: five live, three healthy — still a majority, and nothing changes.
        let suspected = v.viewChanged(Self.ids, healthy: 3, now: t0 + .seconds(1))
        #expect(suspected == nil)
        // A third suspected: two healthy of five.
        let lostChange = v.viewChanged(Self.ids, healthy: 2, now: t0 + .seconds(2))
        let lost = try #require(lostChange)
        #expect(!lost.quorate && !v.serving && v.version == 1, "the members did not change, the quorum did")
        let backChange = v.viewChanged(Self.ids, now: t0 + .seconds(3))
        let back = try #require(backChange)
        #expect(back.quorate && back.regained && v.serving)
        // A minority view of two: not quorate.
        let splitChange = v.viewChanged(Array(Self.ids[0..<2]), now: t0 + .seconds(4))
        let split = try #require(splitChange)
        #expect(!split.quorate && !v.serving)
        // Quorum 1 (a single coordinator listed): always serving.
        var solo = OwnershipView(me: Self.ids[0], quorum: 1, leaseTTL: Self.ttl)
        _ = solo.viewChanged([Self.ids[0]], healthy: 0, now: t0)
        #expect(solo.serving)
    }

    @Test("a budget is learned while someone else may hold its leases: after formation, after a view in which another owned it")
    func movedRecently() throws {
        let me = Self.ids[0]
        let three = Array(Self.ids[0..<3])
        var v = OwnershipView(me: me, quorum: 2, leaseTTL: Self.ttl)
        _ = v.viewChanged(three, now: t0)
        let mine = Self.budget(ownedBy: me, among: three)
        #expect(v.movedRecently(mine, now: t0 + .seconds(4)), "within a lease TTL of formation")
        #expect(!v.movedRecently(mine, now: t0 + .seconds(6)))
        // c2 leaves: its budgets come here or to c1; those that come here were c2's a moment ago.
        let fromC2 = try #require((0..<10_000).lazy.map { BudgetID("x\($0)") }.first {
            Rendezvous.owner(of: $0, among: three) == Self.ids[2] && Rendezvous.owner(of: $0, among: Array(Self.ids[0..<2])) == me
        })
        _ = v.viewChanged(Array(Self.ids[0..<2]), now: t0 + .seconds(10))
        #expect(v.owner(of: fromC2) == me)
        #expect(v.movedRecently(fromC2, now: t0 + .seconds(14)), "c2 may still hold leases it granted")
        #expect(!v.movedRecently(mine, now: t0 + .seconds(14)), "this one owned it in the view that ended too")
        // Views that ended more than a lease TTL ago are forgotten at the next change.
        _ = v.viewChanged(Array(Self.ids[0..<2]), healthy: 1, now: t0 + .seconds(16))
        #expect(!v.movedRecently(fromC2, now: t0 + .seconds(16)))
    }

    @Test("a member that comes back may hold leases of the budgets it would own without this one, until it sees this one")
    func reappeared() throws {
        let me = Self.ids[0]
        let three = Array(Self.ids[0..<3])
        var v = OwnershipView(me: me, quorum: 2, leaseTTL: Self.ttl)
        _ = v.viewChanged(three, now: t0)
        _ = v.viewChanged(Array(Self.ids[0..<2]), now: t0 + .seconds(20)) // c2 gone
        let backChange = v.viewChanged(three, now: t0 + .seconds(40))
        let back = try #require(backChange)
        #expect(back.appeared == [Self.ids[2]] && back.wasFormed && !back.regained)
        // A budget this coordinator owns whose owner without it is c2.
        let b = try #require((0..<10_000).lazy.map { BudgetID("y\($0)") }.first {
            Rendezvous.owner(of: $0, among: three) == me && Rendezvous.owner(of: $0, among: [Self.ids[1], Self.ids[2]]) == Self.ids[2]
        })
        #expect(v.alternate(of: b) == Self.ids[2])
        #expect(v.movedRecently(b, now: t0 + .seconds(44)))
        let first = v.seesMe(Self.ids[2]), second = v.seesMe(Self.ids[2])
        #expect(first && !second, "only the first probe after coming back counts")
        let stayed = v.seesMe(Self.ids[1])
        #expect(!stayed, "a member that never left")
        #expect(!v.movedRecently(b, now: t0 + .seconds(46)), "a lease TTL after it came back")
    }
}
