import AllotCore

/// A coordinator in the cluster: its name (from its certificate) and where peers reach it.
public struct MemberID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var name: String
    public var address: String
    public init(name: String, address: String) {
        self.name = name
        self.address = address
    }
    public static func < (a: MemberID, b: MemberID) -> Bool { (a.name, a.address) < (b.name, b.address) }
    public var description: String { "\(name)@\(address)" }
}

/// SWIM membership (Das, Gupta, Motivala 2002) as a pure state machine: every call takes
/// `now` and returns the messages to send; the shell delivers them over mutual TLS.
///
/// - Each protocol period it pings one member (round robin over a shuffled list). No ack
///   within `pingTimeout`: it asks `indirectProbes` others to ping the target for it. No ack
///   by the end of the period: the target becomes *suspect*.
/// - A suspect not refuted within `suspicionTimeout` is declared *dead*.
/// - A member that hears a suspicion (or death) about itself refutes it by gossiping `alive`
///   with a higher incarnation number; higher incarnations win, and at equal incarnation
///   dead/left > suspect > alive.
/// - Updates ride on pings and acks (piggybacking), each sent about λ·log₂(n) times.
public struct Membership: Sendable {
    public struct Settings: Hashable, Sendable {
        public var protocolPeriod: Duration = .seconds(1)
        public var pingTimeout: Duration = .milliseconds(300)
        public var indirectProbes = 3
        public var suspicionTimeout: Duration = .seconds(3)
        /// Updates piggybacked on one message at most.
        public var maxPiggyback = 8
        /// λ: each update is sent about λ·log₂(n+1) times.
        public var retransmitMultiplier = 3
        public init() {}
    }

    public enum State: Int, Hashable, Sendable, Comparable, CustomStringConvertible {
        case alive = 0, suspect = 1, dead = 2, left = 3
        public static func < (a: State, b: State) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["alive", "suspect", "dead", "left"][rawValue] }
    }

    /// What one member believes about another, as gossiped.
    public struct Update: Hashable, Sendable {
        public var member: MemberID
        public var incarnation: UInt64
        public var state: State
        public init(member: MemberID, incarnation: UInt64, state: State) {
            self.member = member
            self.incarnation = incarnation
            self.state = state
        }
    }

    public enum Message: Hashable, Sendable {
        case ping(seq: UInt64)
        case ack(seq: UInt64)
        /// Ping `target` for me and relay its ack (`seq` is mine).
        case pingRequest(seq: UInt64, target: MemberID)
    }

    public struct Envelope: Hashable, Sendable {
        public var from: MemberID
        public var to: MemberID
        public var message: Message
        public var updates: [Update]
        public init(from: MemberID, to: MemberID, message: Message, updates: [Update]) {
            self.from = from
            self.to = to
            self.message = message
            self.updates = updates
        }
    }

    struct Known: Sendable {
        var incarnation: UInt64
        var state: State
        var since: Instant
    }

    struct Probe: Sendable {
        var target: MemberID
        var sentAt: Instant
        var indirectSent = false
        /// Set when this probe is on someone else's behalf: relay the ack to them.
        var relayTo: (member: MemberID, seq: UInt64)?
    }

    public let me: MemberID
    public let settings: Settings
    public private(set) var incarnation: UInt64 = 0
    var members: [MemberID: Known] = [:]
    var probes: [UInt64: Probe] = [:]
    var nextSeq: UInt64 = 1
    var order: [MemberID] = []
    var orderIndex = 0
    var nextPeriod: Instant
    /// The direct probe of the current period (at most one).
    var currentProbe: UInt64?
    var gossip: [(update: Update, remaining: Int)] = []
    /// When each member was last heard from directly (any message from it).
    var lastHeard: [MemberID: Instant] = [:]
    var rng: SeededRandom
    /// Set by `leave()`: no refutations from here on.
    var leaving = false

    public init(me: MemberID, settings: Settings = Settings(), seed: UInt64 = 1, now: Instant) {
        self.me = me
        self.settings = settings
        rng = SeededRandom(seed: seed)
        nextPeriod = now
    }

    // MARK: views

    /// Members believed alive or suspect (suspects still own budgets until declared dead), me included.
    public var live: [MemberID] {
        ([me] + members.filter { $0.value.state <= .suspect }.map(\.key)).sorted()
    }

    /// Members that count towards a quorum at `now` (me included): alive, or suspected by
    /// rumour while this member still heard from them directly within half a suspicion
    /// timeout. A member cut off from the others stops counting them about half a suspicion
    /// timeout before they declare it dead.
    public func healthy(now: Instant) -> Int { healthyMembers(now: now).count }

    /// The members `healthy` counts, me included.
    public func healthyMembers(now: Instant) -> [MemberID] {
        [me] + members.filter { m, k in
            k.state == .alive || k.state == .suspect && lastHeard[m].map { now - $0 < settings.suspicionTimeout / 2 } == true
        }.map(\.key)
    }

    public func state(of m: MemberID) -> State? { m == me ? .alive : members[m]?.state }

    // MARK: joining and leaving

    /// Starts by pinging the seeds (their acks bring the rest of the cluster by gossip).
    public mutating func join(seeds: [MemberID], now: Instant) -> [Envelope] {
        enqueue(Update(member: me, incarnation: incarnation, state: .alive))
        return seeds.filter { $0 != me }.map { seed in
            let seq = nextSeq
            nextSeq += 1
            probes[seq] = Probe(target: seed, sentAt: now)
            return envelope(to: seed, .ping(seq: seq))
        }
    }

    /// Graceful leave: tells up to `fanout` members at once (and gossip does the rest).
    public mutating func leave(fanout: Int = 4) -> [Envelope] {
        leaving = true
        incarnation += 1
        let u = Update(member: me, incarnation: incarnation, state: .left)
        gossip.removeAll()
        enqueue(u)
        let targets = Array(members.filter { $0.value.state <= .suspect }.keys.sorted().prefix(fanout))
        return targets.map { Envelope(from: me, to: $0, message: .ping(seq: 0), updates: [u]) }
    }

    // MARK: time

    /// When `tick` next has work, or a view read at that time can change: the current
    /// probe's ping timeout, a suspect's suspicion timeout, a suspect's direct contact
    /// ageing out of `healthyMembers` (after `now`), and the next protocol period.
    public func nextWake(now: Instant) -> Instant {
        var t = nextPeriod
        if let seq = currentProbe, let p = probes[seq], !p.indirectSent { t = min(t, p.sentAt + settings.pingTimeout) }
        for (m, k) in members where k.state == .suspect {
            t = min(t, k.since + settings.suspicionTimeout)
            if let heard = lastHeard[m], heard + settings.suspicionTimeout / 2 > now { t = min(t, heard + settings.suspicionTimeout / 2) }
        }
        return t
    }

    /// Runs timeouts and, once per protocol period, the next probe.
    public mutating func tick(now: Instant) -> [Envelope] {
        var out: [Envelope] = []
        // The period's probe without an ack after pingTimeout: ask others.
        if let seq = currentProbe, let p = probes[seq], !p.indirectSent, now - p.sentAt >= settings.pingTimeout {
            probes[seq]?.indirectSent = true
            let helpers = pick(settings.indirectProbes, excluding: [p.target])
            for h in helpers { out.append(envelope(to: h, .pingRequest(seq: seq, target: p.target))) }
        }
        // Suspects past their timeout are dead.
        for (m, k) in members where k.state == .suspect && now - k.since >= settings.suspicionTimeout {
            apply(Update(member: m, incarnation: k.incarnation, state: .dead), now: now)
        }
        guard now >= nextPeriod else { return out }
        nextPeriod = now + settings.protocolPeriod
        // The period's probe failed: suspect its target.
        if let seq = currentProbe, let p = probes.removeValue(forKey: seq), let k = members[p.target], k.state == .alive {
            apply(Update(member: p.target, incarnation: k.incarnation, state: .suspect), now: now)
        }
        currentProbe = nil
        // Forget relayed probes older than a period.
        probes = probes.filter { now - $0.value.sentAt < settings.protocolPeriod * 2 }
        guard let target = nextTarget() else { return out }
        let seq = nextSeq
        nextSeq += 1
        probes[seq] = Probe(target: target, sentAt: now)
        currentProbe = seq
        out.append(envelope(to: target, .ping(seq: seq)))
        return out
    }

    // MARK: messages

    public mutating func receive(_ e: Envelope, now: Instant) -> [Envelope] {
        guard e.to == me else { return [] }
        let newcomer = e.from != me && members[e.from] == nil
        if newcomer && !e.updates.contains(where: { $0.member == e.from && $0.state >= .dead }) {
            apply(Update(member: e.from, incarnation: 0, state: .alive), now: now)
        }
        if e.from != me { lastHeard[e.from] = now }
        for u in e.updates { apply(heardFrom(u, now: now), now: now) }
        var out = respond(to: e, now: now)
        if newcomer {
            // A member heard of for the first time (usually one joining through me): give it
            // the whole view at once rather than letting gossip trickle it in.
            let all = members.filter { $0.key != e.from }.map { Update(member: $0.key, incarnation: $0.value.incarnation, state: $0.value.state) }
                + [Update(member: me, incarnation: incarnation, state: .alive)]
            for i in out.indices where out[i].to == e.from {
                out[i].updates += all.filter { u in !out[i].updates.contains { $0.member == u.member } }.sorted { $0.member < $1.member }
            }
        }
        // A sender we hold dead or gone (a restart, a healed partition) may no longer have that
        // rumour in its gossip: tell it, so it refutes with a higher incarnation.
        if let k = members[e.from], k.state >= .dead {
            let u = Update(member: e.from, incarnation: k.incarnation, state: k.state)
            if out.isEmpty { out = [Envelope(from: me, to: e.from, message: .ping(seq: 0), updates: [u])] }
            for i in out.indices where out[i].to == e.from { out[i].updates.append(u) }
        }
        return out
    }

    private mutating func respond(to e: Envelope, now: Instant) -> [Envelope] {
        switch e.message {
        case .ping(let seq):
            return seq == 0 ? [] : [envelope(to: e.from, .ack(seq: seq))]
        case .ack(let seq):
            // A suspect's refutation comes as `alive` with a higher incarnation in the updates.
            guard let p = probes.removeValue(forKey: seq) else { return [] }
            if seq == currentProbe { currentProbe = nil }
            if let relay = p.relayTo { return [envelope(to: relay.member, .ack(seq: relay.seq))] }
            return []
        case .pingRequest(let seq, let target):
            let mine = nextSeq
            nextSeq += 1
            probes[mine] = Probe(target: target, sentAt: now, indirectSent: true, relayTo: (e.from, seq))
            return [envelope(to: target, .ping(seq: mine))]
        }
    }

    // MARK: updates

    /// A rumour that a member is dead, about a member this one heard from directly within the
    /// suspicion timeout, counts only as a suspicion: the member gets its chance to refute.
    /// (A member returning from a partition brings stale deaths of the other side; taken as
    /// final they would flap the healthy majority.)
    func heardFrom(_ u: Update, now: Instant) -> Update {
        guard u.state == .dead, u.member != me, let k = members[u.member], k.state <= .suspect,
              let t = lastHeard[u.member], now - t < settings.suspicionTimeout else { return u }
        return Update(member: u.member, incarnation: u.incarnation, state: .suspect)
    }

    /// The highest incarnation a member may announce: lives and refutations count up from 0 one
    /// at a time, so anything near UInt64.max is a forged rumour (and +1 on it would trap).
    public static let maxIncarnation: UInt64 = 1 << 40

    mutating func apply(_ u: Update, now: Instant) {
        guard u.incarnation <= Self.maxIncarnation else { return }
        if u.member == me {
            // Rumours of my suspicion, death or departure (a restart after leaving): refute with
            // a higher incarnation — unless I am the one leaving.
            if u.state != .alive && !leaving && u.incarnation >= incarnation {
                incarnation = u.incarnation + 1
                enqueue(Update(member: me, incarnation: incarnation, state: .alive))
            }
            return
        }
        if let k = members[u.member] {
            let newer = u.incarnation > k.incarnation || (u.incarnation == k.incarnation && u.state > k.state)
            // Once dead or left, only a higher incarnation brings a member back.
            guard newer, !(k.state >= .dead && u.incarnation <= k.incarnation) else { return }
        }
        members[u.member] = Known(incarnation: u.incarnation, state: u.state, since: now)
        enqueue(u)
    }

    mutating func enqueue(_ u: Update) {
        gossip.removeAll { $0.update.member == u.member }
        var n = members.count + 1, log = 0
        while n > 0 { log += 1; n >>= 1 }
        gossip.append((u, settings.retransmitMultiplier * log))
    }

    mutating func envelope(to: MemberID, _ m: Message) -> Envelope {
        // The updates sent the fewest times so far go first.
        gossip.sort { $0.remaining > $1.remaining }
        var ups: [Update] = []
        for i in gossip.indices where ups.count < settings.maxPiggyback {
            ups.append(gossip[i].update)
            gossip[i].remaining -= 1
        }
        gossip.removeAll { $0.remaining <= 0 }
        return Envelope(from: me, to: to, message: m, updates: ups)
    }

    // MARK: choosing

    mutating func random() -> UInt64 { rng.next() }

    /// Round robin over a list reshuffled after each pass (SWIM's bounded detection time).
    mutating func nextTarget() -> MemberID? {
        let candidates = members.filter { $0.value.state <= .suspect }.map(\.key)
        guard !candidates.isEmpty else { return nil }
        if orderIndex >= order.count || !order.allSatisfy({ candidates.contains($0) }) {
            order = candidates.sorted()
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                order.swapAt(i, Int(random() % UInt64(i + 1)))
            }
            orderIndex = 0
        }
        defer { orderIndex += 1 }
        return order[orderIndex]
    }

    mutating func pick(_ k: Int, excluding: Set<MemberID>) -> [MemberID] {
        var pool = members.filter { $0.value.state == .alive && !excluding.contains($0.key) }.map(\.key).sorted()
        var out: [MemberID] = []
        while out.count < k && !pool.isEmpty {
            out.append(pool.remove(at: Int(random() % UInt64(pool.count))))
        }
        return out
    }
}
