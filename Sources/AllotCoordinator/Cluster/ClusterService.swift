import AllotCluster
import AllotCore
import AllotTransport
import AllotWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The shell around `Membership`: carries its messages over mutual TLS to the other
/// coordinators and tells the `CoordinatorCore` whenever the live view changes.
///
/// Every coordinator keeps one outgoing connection per peer (opened on first use, with a
/// coordinator certificate); gossip is one-way on it, so an answer travels back on the
/// answerer's own connection. Incoming gossip arrives through the coordinator's listener,
/// where `Session` lets only `coordinator` certificates send it and `CoordinatorCore.gossip`
/// checks that the sender is who its certificate says.
///
/// Joining: the seeds are dialled (their names come from their hello answers); the view is
/// formed once a seed has answered with the cluster's members, or after `joinTimeout` alone.
/// Seeds not in the view are dialled again every protocol period, so two halves that formed
/// apart (or a partition that healed) merge.
public final class ClusterService: Sendable {
    public struct Settings: Sendable {
        public var membership = Membership.Settings()
        /// Addresses (`host:port`) of coordinators to join through; may include this one.
        public var seeds: [String] = []
        /// Every coordinator's address (`cluster.members`; the seeds when not given): only
        /// these count for ownership and the quorum, and each only once its own certificate
        /// has been seen on a direct connection (a rumour cannot add a member).
        public var members: [String] = []
        public var joinTimeout: Duration = .seconds(3)
        /// The shortest time between two ticks. Ticks come when the membership next has work
        /// (`Membership.nextWake`: a ping or suspicion timeout, the next protocol period, a
        /// formation deadline), not on a fixed poll; at least one per protocol period.
        public var tickInterval: Duration = .milliseconds(10)
        public init() {}
    }

    private struct Link: Sendable {
        /// The open connection and the generation of the dial that made it (see `PeerPool`).
        var connection: (generation: Int, connection: any LeaseConnection)?
        var member: MemberID?
        var queue: [Allot_V1_Frame] = []
        var lastDial: Instant = .zero
    }

    private struct State: Sendable {
        var membership: Membership
        /// Which peer to dial, which connection is current (no backoff: gossip dials at most
        /// once per protocol period per seed, and on demand).
        var pool: PeerPool
        var links: [String: Link] = [:]
        /// The live view (`all`), and the members of it that count.
        var all: [MemberID] = []
        var live: [MemberID] = []
        var healthy = 0
        /// Members heard from directly (their gossip came on a connection whose certificate
        /// names them); the others are only rumours.
        var verified: Set<MemberID> = []
        var formed = false
        var startedAt: Instant
        var stopped = false
        var messagesSent: Int64 = 0
        var messagesReceived: Int64 = 0
    }

    public let me: MemberID
    public let settings: Settings
    private let core: CoordinatorCore
    private let dial: @Sendable (String) -> (any LeaseTransport)?
    private let logger: Logger
    private let state: Mutex<State>
    private let timer = Mutex<WakeTimer?>(nil)
    /// Where `run()` ticks (`start(on:)` names its own).
    private let loop: any EventLoop
    private let unreadable = Mutex<Set<String>>([])

    /// `dial`: a transport to a peer's address (nil when the address cannot be read).
    public init(core: CoordinatorCore, settings: Settings, logger: Logger, now: Instant,
                loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next(),
                dial: @escaping @Sendable (String) -> (any LeaseTransport)?) {
        self.loop = loop
        precondition(core.settings.member != nil, "a cluster needs CoordinatorCore.Settings.member")
        self.me = core.settings.member!
        self.core = core
        self.settings = settings
        self.dial = dial
        self.logger = logger
        var seed: UInt64 = 0xA110
        for b in me.name.utf8 { seed = seed &* 31 &+ UInt64(b) }
        var pool = PeerPool.Settings()
        pool.minBackoff = .zero
        pool.maxBackoff = .zero
        state = Mutex(State(membership: Membership(me: me, settings: settings.membership, seed: seed, now: now),
                            pool: PeerPool(settings: pool, seed: seed), startedAt: now))
    }

    public var live: [MemberID] { state.withLock { $0.live } }
    public var isFormed: Bool { state.withLock { $0.formed } }
    public var traffic: (sent: Int64, received: Int64) { state.withLock { ($0.messagesSent, $0.messagesReceived) } }

    /// Starts gossiping (ticks on `loop`).
    public func start(on loop: any EventLoop) {
        // The join timeout counts from here (a coordinator may have waited for its ledger).
        state.withLock { $0.startedAt = WallClock.now() }
        core.onGossip { [weak self] e in self?.received(e) }
        let wake = WakeTimer(loop: loop, spacing: settings.tickInterval, longest: settings.membership.protocolPeriod) { [weak self] now in
            self?.step(now: now)
        }
        timer.withLock { $0 = wake }
        step(now: WallClock.now())
    }

    /// When the next tick is due: the membership's next deadline, or formation by timeout.
    private func nextWake(_ s: State, now: Instant) -> Instant {
        var t = s.membership.nextWake(now: now)
        if !s.formed { t = min(t, s.startedAt + settings.joinTimeout) }
        return t
    }

    private func offerWake(_ at: Instant?) {
        guard let at else { return }
        timer.withLock { $0 }?.offer(at)
    }

    func step(now: Instant) {
        let (out, dials, wake) = state.withLock { s -> ([Membership.Envelope], [(String, Int)], Instant?) in
            guard !s.stopped else { return ([], [], nil) }
            var dials: [(String, Int)] = []
            var joins: [Membership.Envelope] = []
            // Seeds not (or no longer) in the view: dial them about once per protocol period.
            let known = Set(s.membership.live.map(\.address))
            for seed in settings.seeds where seed != me.address && !known.contains(seed) {
                var link = s.links[seed] ?? Link()
                defer { s.links[seed] = link }
                guard s.pool.peers[seed]?.connecting != true, now - link.lastDial >= settings.membership.protocolPeriod else { continue }
                link.lastDial = now
                if let generation = s.pool.claim(seed, now: now) {
                    dials.append((seed, generation))
                } else if let m = link.member {
                    // Connected but not in the view (it was declared dead, or we formed
                    // apart): join through it again.
                    joins += s.membership.join(seeds: [m], now: now)
                }
            }
            if !s.formed && now - s.startedAt >= settings.joinTimeout { s.formed = true }
            let out = joins + s.membership.tick(now: now)
            return (out, dials, nextWake(s, now: now))
        }
        for (a, generation) in dials { connect(a, generation: generation) }
        deliver(out)
        publish(now: now)
        offerWake(wake)
    }

    private func received(_ e: Membership.Envelope) {
        let now = WallClock.now()
        let (out, wake) = state.withLock { s -> ([Membership.Envelope], Instant?) in
            s.messagesReceived += 1
            guard !s.stopped else { return ([], nil) }
            s.verified.insert(e.from)
            let out = s.membership.receive(e, now: now)
            // Formed once a peer has answered (its answer to a newcomer carries the whole view).
            if case .ack = e.message { s.formed = true }
            return (out, nextWake(s, now: now))
        }
        deliver(out)
        publish(now: now)
        offerWake(wake)
        // A probe means the sender has this coordinator in its view.
        if case .ping(let seq) = e.message, seq != 0 { core.peerSeesMe(e.from, now: now) }
    }

    /// Tells the core when the live view changed: the members that count (configured, and
    /// verified by their certificate).
    private func publish(now: Instant) {
        let allowed = Set(settings.members), me = self.me
        let (changed, healthy, stale) = state.withLock { s -> ([MemberID]?, Int, [any LeaseConnection]) in
            guard s.formed else { return (nil, 0, []) }
            let verified = s.verified
            let counts = { (m: MemberID) in m == me || (verified.contains(m) && (allowed.isEmpty || allowed.contains(m.address))) }
            let all = s.membership.live
            let live = all.filter(counts)
            let healthy = s.membership.healthyMembers(now: now).filter(counts).count
            guard all != s.all || live != s.live || healthy != s.healthy || !core.isFormed else { return (nil, 0, []) }
            s.all = all
            s.live = live
            s.healthy = healthy
            // Connections to members no longer in the view may be dead without knowing it (a
            // partition drops packets, it sends no reset): drop them, so a rejoin dials afresh.
            let addresses = Set(all.map(\.address))
            var stale: [any LeaseConnection] = []
            for (a, link) in s.links where !addresses.contains(a) {
                if let c = link.connection { stale.append(c.connection) }
                s.links[a]?.connection = nil
                s.pool.drop(a)
            }
            return (live, healthy, stale)
        }
        for c in stale { c.close() }
        if let changed {
            logger.info("cluster view changed", metadata: ["allot.members": "\(changed.map(\.description).joined(separator: ", "))",
                                                           "allot.unsuspected": "\(healthy)"])
            core.membersChanged(changed, healthy: healthy, now: now)
        }
    }

    private static func enqueue(_ e: Membership.Envelope, _ s: inout State) {
        var link = s.links[e.to.address] ?? Link()
        link.queue.append(e.wire)
        if link.queue.count > 64 { link.queue.removeFirst(link.queue.count - 64) }
        s.links[e.to.address] = link
    }

    private func deliver(_ envelopes: [Membership.Envelope]) {
        guard !envelopes.isEmpty else { return }
        var sends: [(any LeaseConnection, [Allot_V1_Frame])] = []
        var dials: [(String, Int)] = []
        let now = WallClock.now()
        state.withLock { s in
            for e in envelopes { Self.enqueue(e, &s) }
            for address in Set(envelopes.map(\.to.address)) {
                guard var link = s.links[address] else { continue }
                defer { s.links[address] = link }
                if let c = link.connection {
                    sends.append((c.connection, link.queue))
                    s.messagesSent += Int64(link.queue.count)
                    link.queue = []
                } else if let generation = s.pool.claim(address, now: now) {
                    link.lastDial = now
                    dials.append((address, generation))
                }
            }
        }
        for (c, frames) in sends { c.send(frames) }
        for (a, generation) in dials { connect(a, generation: generation) }
    }

    private func connect(_ address: String, generation: Int) {
        guard let transport = dial(address) else {
            // Once per address: gossip would ask again at every message.
            if unreadable.withLock({ $0.insert(address).inserted }) {
                logger.error("cannot dial cluster peer: the address does not parse", metadata: ["allot.address": "\(address)"])
            }
            state.withLock { $0.pool.failed(address, generation: generation, now: WallClock.now()) }
            return
        }
        Task {
            do {
                // `connect` returns once TCP is up; the peer (or a proxy in front of it whose
                // upstream is down) may close it before this task stores it. A connection that
                // closed first, or that a view change dropped meanwhile, is never stored: the
                // link stays empty and is dialled again.
                let closed = ClosedFlag()
                let conn = try await transport.connect(
                    onFrame: { [weak self] f in self?.peerFrame(f, address: address) },
                    onClose: { [weak self] in
                        closed.set()
                        self?.peerClosed(address, generation: generation)
                    })
                conn.send([.hello(name: me.name, capabilities: ["gossip"])])
                let queued = state.withLock { s -> [Allot_V1_Frame]? in
                    guard !closed.isSet, s.pool.connected(address, generation: generation) else { return nil }
                    var link = s.links[address] ?? Link()
                    defer { s.links[address] = link }
                    link.connection = (generation, conn)
                    defer { link.queue = [] }
                    s.messagesSent += Int64(link.queue.count)
                    return link.queue
                }
                if let queued { conn.send(queued) } else if !closed.isSet { conn.close() }
            } catch {
                state.withLock { s in
                    s.pool.failed(address, generation: generation, now: WallClock.now())
                    s.links[address]?.queue = []
                }
                logger.debug("cluster peer unreachable", metadata: ["allot.address": "\(address)", "allot.error": "\(error)"])
            }
        }
    }

    private func peerFrame(_ f: Allot_V1_Frame, address: String) {
        switch f.body {
        case .helloAck(let ack) where ack.hasMember:
            let m = MemberID(wire: ack.member)
            let now = WallClock.now()
            let out = state.withLock { s -> [Membership.Envelope] in
                s.links[address]?.member = m
                guard settings.seeds.contains(address), s.membership.state(of: m) == nil || s.membership.state(of: m)! >= .dead else { return [] }
                return s.membership.join(seeds: [m], now: now)
            }
            deliver(out)
        case .error(let e):
            logger.warning("cluster peer refused us", metadata: ["allot.address": "\(address)", "allot.reason": "\(e.code): \(e.message)"])
        default:
            break
        }
    }

    private func peerClosed(_ address: String, generation: Int) {
        state.withLock { s in
            if s.links[address]?.connection?.generation == generation { s.links[address]?.connection = nil }
            _ = s.pool.closed(address, generation: generation, now: WallClock.now())
        }
    }

    /// Graceful leave (SIGTERM): tells some members at once; gossip does the rest.
    public func leave() async {
        let out = state.withLock { s -> [Membership.Envelope] in s.membership.leave() }
        deliver(out)
        try? await Task.sleep(for: .milliseconds(100))
        stop()
    }

    public func stop() {
        timer.withLock { $0?.stop(); $0 = nil }
        let conns = state.withLock { s -> [any LeaseConnection] in
            s.stopped = true
            s.pool.dropAll()
            defer { s.links = [:] }
            return s.links.values.compactMap(\.connection?.connection)
        }
        for c in conns { c.close() }
    }
}

extension ClusterService: Service {
    /// As a part of the coordinator's `ServiceGroup`: gossips once the core has started (its
    /// durable budgets resumed, the lease listener up), and leaves the cluster on graceful
    /// shutdown (before the coordinator drains its nodes: the group stops parts in reverse).
    public func run() async throws {
        let core = self.core
        guard await cancelWhenGracefulShutdown({ await core.serving.wait() }) else { return }
        start(on: loop)
        try? await gracefulShutdown()
        await leave()
    }
}
