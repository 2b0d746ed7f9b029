import AllotCore

/// The lease client's decisions, pure: which coordinators to be connected to, where each
/// budget's messages go, what a member list, a redirect or a closed connection changes, when
/// a heartbeat is due. The shell (`LeaseClient`) dials, holds the connections and sends; the
/// time comes in with every event, the backoff's jitter from a seeded generator.
///
/// Routing: a redirect's owner while it is reachable (until the next member list), else the
/// rendezvous owner among the live coordinators this node is connected to, else any
/// connected coordinator (with one coordinator there is no member list).
public struct LeaseRouting: Sendable {
    public struct Settings: Sendable {
        public var pool = PeerPool.Settings()
        public var heartbeatInterval: Duration = .seconds(5)
        public init() {}
    }

    public let settings: Settings
    public let seeds: [String]
    public private(set) var pool: PeerPool
    /// The live coordinators, from the latest member list (empty: one coordinator).
    public private(set) var members: [MemberID] = []
    /// Redirects followed: budget → owner address, until the next member list.
    public private(set) var redirects: [BudgetID: String] = [:]
    private var heartbeat: UInt64 = 0
    private var lastHeartbeat: Instant = .zero

    public init(seeds: [String], settings: Settings = Settings(), seed: UInt64) {
        self.seeds = seeds
        self.settings = settings
        pool = PeerPool(settings: settings.pool, seed: seed)
    }

    /// The addresses to be connected to: every live coordinator, or the seeds before the
    /// first member list (and again whenever no member can be reached).
    public var targets: [String] {
        let addresses = members.map(\.address)
        if addresses.contains(where: pool.isConnected) { return addresses }
        return Array(Set(addresses + seeds)).sorted()
    }

    /// The dials to start now: every target not connected, not being dialled and not backing off.
    public mutating func dialsDue(now: Instant) -> [(address: String, generation: Int)] {
        targets.compactMap { a in pool.claim(a, now: now).map { (a, $0) } }
    }

    /// When `dialsDue` next has a dial to start: the earliest end of a target's backoff (now
    /// when one is free to dial; nil while every target is connected or being dialled).
    public func nextDial(now: Instant) -> Instant? {
        targets.compactMap { a -> Instant? in
            guard let p = pool.peers[a] else { return now }
            return p.connected || p.connecting ? nil : max(now, p.notBefore)
        }.min()
    }

    public mutating func connected(_ address: String, generation: Int) -> Bool { pool.connected(address, generation: generation) }
    public mutating func failed(_ address: String, generation: Int, now: Instant) { pool.failed(address, generation: generation, now: now) }

    /// A connection closed. True when the budgets it served move to the next coordinator in
    /// rank, so what waited for an answer from it must be sent again.
    public mutating func closed(_ address: String, generation: Int, now: Instant) -> Bool {
        guard pool.closed(address, generation: generation, now: now) else { return false }
        redirects = redirects.filter { $0.value != address }
        return !members.isEmpty
    }

    /// Where `budget`'s messages go now (nil: no coordinator is connected).
    public func route(_ budget: BudgetID) -> String? {
        if let a = redirects[budget], pool.isConnected(a) { return a }
        let reachable = members.filter { pool.isConnected($0.address) }
        if let owner = Rendezvous.owner(of: budget, among: reachable) { return owner.address }
        return pool.connected.first
    }

    /// `outgoing` by the coordinator each message goes to, in address order (messages with no
    /// route are left out: the enforcer sends them again).
    public func routes(_ outgoing: [Enforcer.Outgoing]) -> [(address: String, messages: [Enforcer.Outgoing])] {
        var byPeer: [String: [Enforcer.Outgoing]] = [:]
        for m in outgoing {
            let budget: BudgetID
            switch m {
            case .acquire(let a): budget = a.budget
            case .release(let r): budget = r.budget
            }
            guard let a = route(budget) else { continue }
            byPeer[a, default: []].append(m)
        }
        return byPeer.keys.sorted().map { ($0, byPeer[$0]!) }
    }

    /// A member list arrived. Nil when it changes nothing; else the addresses whose connections
    /// to drop (they left the view: a partition may drop packets without a reset, so they are
    /// dialled afresh when back) and, of `budgets`, those whose owner changed (their leases are
    /// reported to the new owner).
    public mutating func membersChanged(_ list: [MemberID], budgets: [BudgetID]) -> (dropped: [String], moved: Set<BudgetID>)? {
        let list = list.sorted()
        guard list != members else { return nil }
        let old = members
        members = list
        redirects = [:]
        let addresses = Set(list.map(\.address))
        let dropped = list.isEmpty ? [] : pool.peers.keys.sorted().filter { !addresses.contains($0) && pool.drop($0) }
        let moved = old.isEmpty ? [] : Set(budgets.filter {
            Rendezvous.owner(of: $0, among: old)?.name != Rendezvous.owner(of: $0, among: list)?.name
        })
        return (dropped, moved)
    }

    /// A coordinator answered that `owner` owns `budget`: follow it until the next member list.
    /// Returns the dial to start at once (the owner is not connected; no backoff), if any.
    public mutating func redirected(_ budget: BudgetID, to owner: String, now: Instant) -> Int? {
        redirects[budget] = owner
        return pool.claim(owner, now: now, respectBackoff: false)
    }

    /// When the next heartbeat is due.
    public var nextHeartbeat: Instant { lastHeartbeat + settings.heartbeatInterval }

    /// The heartbeat's sequence number when one is due (every `heartbeatInterval`).
    public mutating func heartbeatDue(now: Instant) -> UInt64? {
        guard now - lastHeartbeat >= settings.heartbeatInterval else { return nil }
        heartbeat += 1
        lastHeartbeat = now
        return heartbeat
    }

    /// Shutting down: every connection is forgotten.
    public mutating func dropAll() { pool.dropAll() }
}
