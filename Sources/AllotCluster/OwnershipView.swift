import AllotCore

/// One coordinator's view of who owns which budget, and whether it may grant: the live
/// members, the quorum, the views that ended within the last lease TTL (budgets owned by
/// someone else in one of them are learned, not trusted), and members that (re)appeared
/// lately (they may still hold leases they granted while they did not see this one). A pure
/// state machine: every change takes the time and returns what the coordinator must do.
public struct OwnershipView: Sendable {
    public let me: MemberID
    /// Live members needed to grant (a majority of `cluster.members`); 1 or less: always.
    public let quorum: Int
    public let leaseTTL: Duration
    /// Live members, me included, sorted; `version` counts the changes.
    public private(set) var members: [MemberID]
    public private(set) var version: UInt64 = 0
    /// False until the first view (nothing is granted before it).
    public private(set) var formed = false
    public private(set) var formedAt: Instant = .zero
    /// The view holds at least `quorum` healthy members.
    public private(set) var quorate = true
    private var history: [(ended: Instant, members: [MemberID])] = []
    /// When each member last (re)appeared: until a lease TTL later it may still hold leases
    /// it granted while it did not see this coordinator.
    private var appeared: [String: Instant] = [:]
    /// Of those, the ones seen probing this coordinator since (they see it too).
    private var acknowledged: Set<String> = []

    public init(me: MemberID, quorum: Int, leaseTTL: Duration) {
        self.me = me
        self.quorum = quorum
        self.leaseTTL = leaseTTL
        members = [me]
    }

    /// What a new view means for the budgets.
    public struct Change: Sendable, Equatable {
        /// Members that (re)appeared in a formed view.
        public var appeared: [MemberID]
        /// The view was formed before this change.
        public var wasFormed: Bool
        /// The quorum came back with this change (every owned budget is taken over afresh).
        public var regained: Bool
        public var quorate: Bool

        public init(appeared: [MemberID], wasFormed: Bool, regained: Bool, quorate: Bool) {
            self.appeared = appeared
            self.wasFormed = wasFormed
            self.regained = regained
            self.quorate = quorate
        }
    }

    /// The live members changed (`healthy`: how many of them are not suspected; default all).
    /// Nil when only the suspicion count moved, not the quorum: nothing to do.
    public mutating func viewChanged(_ live: [MemberID], healthy: Int? = nil, now: Instant) -> Change? {
        let live = live.sorted()
        let wasFormed = formed
        let quorate = quorum <= 1 || (healthy ?? live.count) >= quorum
        if members == live && formed && quorate == self.quorate { return nil }
        let appeared = formed ? live.filter { $0 != me && !members.contains($0) } : []
        for m in appeared {
            self.appeared[m.name] = now
            acknowledged.remove(m.name)
        }
        self.appeared = self.appeared.filter { now - $0.value < leaseTTL }
        if members != live || !formed {
            if formed { history.append((now, members)) }
            members = live
            version += 1
        }
        if !formed { formedAt = now }
        formed = true
        history.removeAll { now - $0.ended > leaseTTL }
        let regained = quorate && !self.quorate
        self.quorate = quorate
        return Change(appeared: appeared, wasFormed: wasFormed, regained: regained, quorate: quorate)
    }

    /// Whether this coordinator may grant now.
    public var serving: Bool { formed && quorate }

    /// The owner of `budget` in the current view.
    public func owner(of budget: BudgetID) -> MemberID? { Rendezvous.owner(of: budget, among: members) }

    /// Who would own `budget` without this coordinator.
    public func alternate(of budget: BudgetID) -> MemberID? { Rendezvous.owner(of: budget, among: members.filter { $0 != me }) }

    /// Whether another member may hold leases of `budget` it granted: the view formed less
    /// than a lease TTL ago, its alternate owner (re)appeared less than a lease TTL ago, or
    /// someone else owned it in a view that ended less than a lease TTL ago.
    public func movedRecently(_ budget: BudgetID, now: Instant) -> Bool {
        if now - formedAt < leaseTTL { return true }
        if let alt = alternate(of: budget), let t = appeared[alt.name], now - t < leaseTTL { return true }
        return history.contains { Rendezvous.owner(of: budget, among: $0.members) != me }
    }

    /// `member` probed this coordinator, so it sees this one: true the first time after it
    /// (re)appeared (the budgets it would own without this one are then learned a lease TTL
    /// from now: it granted them at most until now).
    public mutating func seesMe(_ member: MemberID) -> Bool {
        guard appeared[member.name] != nil, !acknowledged.contains(member.name) else { return false }
        acknowledged.insert(member.name)
        return true
    }
}
