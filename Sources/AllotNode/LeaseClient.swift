import AllotCluster
import AllotCore
import AllotTransport
import AllotWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The background half of the node library: keeps the `SharedEnforcer`'s leases fed (or
/// any `LeaseEndpoint`'s: a region's coordinator uses it towards the global cluster).
///
/// `admit`/`reserve`/`settle` on `enforcer` stay synchronous and local. `run()` — the
/// client's whole life, as a service — connects, polls the enforcer when it next has work
/// (`Enforcer.nextWake`, at most once per `pollInterval`, at least once a second; a request
/// that leaves a slice low wakes it at once), batches many budgets per frame, applies grants and pushes as they arrive, reconnects with
/// exponential backoff and jitter (unanswered acquires are re-sent with the same request id,
/// so retries are idempotent), and when cancelled releases everything unused before it returns.
///
/// With a coordinator cluster it connects to every live coordinator (the list comes from
/// any coordinator it reaches, starting from the seed addresses) and sends each budget's
/// messages to its owner: the rendezvous hash over the live coordinators it can reach. A
/// coordinator that is not the owner answers with the owner (a redirect), which is followed
/// at once; a coordinator that goes away takes its budgets to the next in rank.
public final class LeaseClient: Service, Sendable {
    private struct State: Sendable {
        /// Every decision: targets, routes, redirects, backoff, heartbeats.
        var routing: LeaseRouting
        /// The open connections, by address, with the generation of the dial that made each.
        var connections: [String: (generation: Int, connection: any LeaseConnection)] = [:]
        var traffic = Traffic()
        /// Set when shutdown begins: no more polling.
        var stopped = false
    }

    public let endpoint: any LeaseEndpoint
    /// This life of the node, sent in every hello: the start time in µs (a restarted node has
    /// a new one, so coordinators forget its previous life's request ids).
    public let incarnation: UInt64 = UInt64(max(1, WallClock.now().nanoseconds / 1_000))
    /// The gateway's enforcer, when that is the endpoint.
    public var enforcer: SharedEnforcer? { endpoint as? SharedEnforcer }
    public let settings: Settings
    private let seeds: [String]
    private let dial: @Sendable (String) -> (any LeaseTransport)?
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>
    /// Lookups of named budgets awaiting their answers (LeaseClient+Lookup.swift).
    let lookups = Lookups()
    /// The consumer directory's receiver, on a gateway (`onDirectory`).
    let directoryHook = Mutex<DirectoryHook?>(nil)
    /// The policy's receiver, on a gateway (`onConfig`).
    let configHook = Mutex<DirectoryHook?>(nil)
    private let stepLock = Mutex(())
    /// The poll's timer and the dials' timer while `run()` runs.
    private let timer = Mutex<WakeTimer?>(nil)
    private let dialTimer = Mutex<WakeTimer?>(nil)

    /// One coordinator. `group`: where the periodic poll runs (an event loop of it).
    public convenience init(enforcer: SharedEnforcer, transport: any LeaseTransport, settings: Settings = Settings(), logger: Logger,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.init(endpoint: enforcer, seeds: [""], settings: settings, logger: logger, group: group) { _ in transport }
    }

    public convenience init(enforcer: SharedEnforcer, seeds: [String], settings: Settings = Settings(), logger: Logger,
                            group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                            dial: @escaping @Sendable (String) -> (any LeaseTransport)?) {
        self.init(endpoint: enforcer, seeds: seeds, settings: settings, logger: logger, group: group, dial: dial)
    }

    /// A coordinator cluster reached through `seeds` (addresses); `dial` makes a transport
    /// for an address (a seed, or a member's from a member list).
    public init(endpoint: any LeaseEndpoint, seeds: [String], settings: Settings = Settings(), logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                dial: @escaping @Sendable (String) -> (any LeaseTransport)?) {
        self.group = group
        self.endpoint = endpoint
        self.seeds = seeds
        self.dial = dial
        self.settings = settings
        self.logger = logger
        var rs = LeaseRouting.Settings()
        rs.heartbeatInterval = settings.heartbeatInterval
        rs.pool.minBackoff = settings.minBackoff
        rs.pool.maxBackoff = settings.maxBackoff
        state = Mutex(State(routing: LeaseRouting(seeds: seeds, settings: rs, seed: UInt64.random(in: 1...UInt64.max))))
        (endpoint as? SharedEnforcer)?.onWantsPoll { [weak self] in self?.wake() }
    }

    /// Polls within `pollInterval` (a request left a slice low, or a budget without a lease).
    public func wake() {
        timer.withLock { $0 }?.offer(WallClock.now())
    }

    /// Arms the poll for when the endpoint next has work, or a heartbeat is due.
    private func wakeLater(now: Instant) {
        guard let t = timer.withLock({ $0 }) else { return }
        guard isConnected else { return t.offer(now + t.longest) }
        t.offer(min(endpoint.nextWake(now: now), state.withLock { $0.routing.nextHeartbeat }))
    }

    /// Arms the dials' timer for when a target's backoff ends.
    private func dialLater(now: Instant) {
        guard let next = state.withLock({ s in s.stopped ? nil : s.routing.nextDial(now: now) }) else { return }
        dialTimer.withLock { $0 }?.offer(next)
    }

    public var traffic: Traffic { state.withLock { $0.traffic } }

    /// Sends `frame` (an audit head, say) to one connected coordinator; false when none is.
    @discardableResult
    public func sendToAnyCoordinator(_ frame: Allot_V1_Frame) -> Bool {
        let connection = state.withLock { s in s.connections.sorted { $0.key < $1.key }.first?.value.connection }
        connection?.send([frame])
        return connection != nil
    }
    public var isConnected: Bool { state.withLock { !$0.connections.isEmpty } }
    /// The open connection to `budget`'s coordinator (its owner, as far as this node knows).
    func connection(for budget: BudgetID) -> (address: String, connection: any LeaseConnection)? {
        state.withLock { s in s.routing.route(budget).flatMap { a in s.connections[a].map { (a, $0.connection) } } }
    }
    /// The live coordinators as last told (empty with a single coordinator).
    public var members: [MemberID] { state.withLock { $0.routing.members } }

    /// Runs until the task is cancelled or a `ServiceGroup` shuts down gracefully, then
    /// releases every lease (best effort) and returns.
    public func run() async {
        let stopping = Mutex(false)
        await withGracefulShutdownHandler {
            await loop(stopping: { stopping.withLock { $0 } })
        } onGracefulShutdown: {
            stopping.withLock { $0 = true }
        }
        await shutdown()
    }

    private func loop(stopping: () -> Bool) async {
        // The poll runs on an event loop, not in this task: a process whose Swift concurrency
        // threads are busy with CPU-bound work still refills its leases on time.
        let poller = WakeTimer(loop: group.next(), spacing: settings.pollInterval, longest: .seconds(1)) { [weak self] now in
            guard let self else { return }
            if self.isConnected { self.step(now: now) } else { self.wakeLater(now: now) }
        }
        // Dials when a target's backoff ends (`LeaseRouting.nextDial`), and when a dial
        // fails, a connection closes or a member list names a new coordinator.
        let dialer = WakeTimer(loop: group.next(), spacing: .milliseconds(10), longest: .seconds(1)) { [weak self] now in
            self?.connectMissing(now: now)
        }
        timer.withLock { $0 = poller }
        dialTimer.withLock { $0 = dialer }
        defer {
            timer.withLock { $0 = nil }
            dialTimer.withLock { $0 = nil }
            poller.stop()
            dialer.stop()
        }
        poller.offer(WallClock.now())
        connectMissing(now: WallClock.now())
        while !Task.isCancelled && !stopping() && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
    }

    /// Starts a connection to every target not connected, each with its own backoff, and
    /// arms the dials' timer for the next.
    private func connectMissing(now: Instant) {
        let due = state.withLock { s in s.stopped ? [] : s.routing.dialsDue(now: now) }
        for (a, generation) in due { Task { await connect(a, generation: generation) } }
        dialLater(now: now)
    }

    /// Polls at once instead of at the next tick: a gateway calls this when a request was
    /// denied by a slice that may be refilled, so the acquire leaves without waiting.
    public func pollNow() {
        guard isConnected else { return }
        step(now: WallClock.now())
    }

    /// One round: expire, poll, send what the enforcer wants sent. Rounds never overlap
    /// (the periodic poll and `pollNow` may race), so frames leave in the order they were made.
    func step(now: Instant) {
        stepLock.withLock { _ in stepLocked(now: now) }
        wakeLater(now: now)
    }

    private func stepLocked(now: Instant) {
        guard !state.withLock({ $0.stopped }) else { return }
        let (outgoing, inUse) = endpoint.step(now: now)
        for h in inUse {
            logger.warning("concurrency lease ended with requests in flight", metadata: ["allot.budget": "\(h)"])
        }
        send(outgoing)
        let (beat, conns) = state.withLock { s in (s.routing.heartbeatDue(now: now), s.connections.values.map(\.connection)) }
        if let beat { for c in conns { c.send([.heartbeat(beat, reply: false)]) } }
    }

    /// Sends each message to its budget's coordinator, many budgets per frame.
    private func send(_ outgoing: [Enforcer.Outgoing]) {
        guard !outgoing.isEmpty else { return }
        if logger.logLevel <= .trace {
            for m in outgoing {
                switch m {
                case .acquire(let a):
                    logger.trace("acquire", metadata: ["allot.budget": "\(a.budget)", "allot.want": "\(a.want)", "allot.holding": "\(a.holding)",
                                                       "allot.available": "\(a.available)", "allot.demand": "\(a.demandRate)",
                                                       "allot.capacity": "\(a.capacityInUse)", "allot.request": "\(a.requestID)"])
                case .release(let r):
                    logger.trace("release", metadata: ["allot.budget": "\(r.budget)", "allot.consumed": "\(r.consumed)",
                                                       "allot.released": "\(r.released)", "allot.final": "\(r.final)"])
                }
            }
        }
        let batches = state.withLock { s -> [(any LeaseConnection, [Allot_V1_Frame])] in
            s.routing.routes(outgoing).compactMap { route in
                guard let c = s.connections[route.address]?.connection else { return nil }
                let frames = Self.frames(for: route.messages, maxItems: settings.maxItemsPerFrame)
                s.traffic.framesSent += frames.count
                return (c, frames)
            }
        }
        for (c, frames) in batches { c.send(frames) }
    }

    private func connect(_ address: String, generation: Int) async {
        guard let transport = dial(address) else {
            logger.error("cannot dial coordinator", metadata: ["allot.address": "\(address)"])
            state.withLock { $0.routing.failed(address, generation: generation, now: WallClock.now()) }
            dialLater(now: WallClock.now())
            return
        }
        do {
            let closedFirst = ClosedFlag()
            let conn = try await transport.connect(
                onFrame: { [weak self] frame in self?.received(frame, from: address) },
                onClose: { [weak self] in
                    closedFirst.set()
                    self?.closed(address, generation: generation)
                })
            // The hello first, before the connection is visible to the poll (whose heartbeat
            // or acquires would otherwise overtake it and be refused).
            conn.send([.hello(name: endpoint.nodeName, incarnation: incarnation)] + directoryWish())
            let kept = state.withLock { s -> Bool in
                // Closed before it could be stored (its close was handled), or dropped from the
                // view meanwhile: keep no dead connection (dialled again).
                guard !closedFirst.isSet, s.routing.connected(address, generation: generation) else { return false }
                s.connections[address] = (generation, conn)
                s.traffic.connects += 1
                s.traffic.framesSent += 1
                return true
            }
            if !kept && !closedFirst.isSet { conn.close() }
            if kept { wake() }
            logger.debug("connected", metadata: ["allot.address": "\(address)", "allot.kept": "\(kept)"])
        } catch {
            state.withLock { s in
                s.traffic.connectFailures += 1
                s.routing.failed(address, generation: generation, now: WallClock.now())
            }
            dialLater(now: WallClock.now())
            logger.debug("connect failed", metadata: ["allot.address": "\(address)", "allot.error": "\(error)"])
        }
    }

    private func closed(_ address: String, generation: Int) {
        let now = WallClock.now()
        let moved = state.withLock { s -> Bool in
            if s.connections[address]?.generation == generation { s.connections[address] = nil }
            return s.routing.closed(address, generation: generation, now: now)
        }
        dialLater(now: now)
        // The budgets it owned go to the next coordinator in rank at once: re-send what was
        // waiting for an answer from it.
        if moved {
            endpoint.retryAllPending(now: now)
            wake()
        }
    }

    func received(_ frame: Allot_V1_Frame, from address: String = "") {
        state.withLock { $0.traffic.framesReceived += 1 }
        let now = WallClock.now()
        switch frame.body {
        case .grants(let batch), .push(let batch):
            if logger.logLevel <= .trace {
                for g in batch.items {
                    logger.trace("grant", metadata: ["allot.from": "\(address)", "allot.budget": "\(g.budget)", "allot.outcome": "\(g.outcome)",
                                                     "allot.epoch": "\(g.epoch)", "allot.lease": "\(g.leaseID)", "allot.rate": "\(g.rate)",
                                                     "allot.capacity": "\(g.capacity)", "allot.amount": "\(g.amount)", "allot.adopted": "\(g.adopted)",
                                                     "allot.retry_ns": "\(g.retryAfterNs)", "allot.request": "\(g.requestID)"])
                }
            }
            endpoint.receive(batch.items.filter { $0.outcome == .granted }.map { Grant(wire: $0) }, now: now)
            for g in batch.items where g.outcome == .unknownBudget {
                logger.error("coordinator does not know budget", metadata: ["allot.budget": "\(g.budget)"])
                endpoint.unknownBudget(BudgetID(g.budget), requestID: g.requestID, now: now)
            }
            redirected(batch.items.filter { $0.outcome == .notOwner || $0.outcome == .unavailable }, now: now)
        case .members(let list):
            let members = list.members.map { MemberID(wire: $0) }
            let budgets = endpoint.budgetIDs
            let (change, stale) = state.withLock { s -> ((dropped: [String], moved: Set<BudgetID>)?, [any LeaseConnection]) in
                guard let change = s.routing.membersChanged(members, budgets: budgets) else { return (nil, []) }
                // Coordinators that left the view: close, and dial afresh when they are back.
                return (change, change.dropped.compactMap { s.connections.removeValue(forKey: $0)?.connection })
            }
            for c in stale { c.close() }
            if let change {
                logger.info("coordinators", metadata: ["allot.members": "\(members.sorted().map(\.description).joined(separator: ", "))"])
                connectMissing(now: now)
                endpoint.ownersChanged(change.moved, now: now)
                endpoint.retryAllPending(now: now)
            }
        case .heartbeat(let h) where !h.reply:
            let c = state.withLock { $0.connections[address]?.connection }
            c?.send([.heartbeat(h.sequence, reply: true)])
        case .statusResponse(let r):
            lookups.answer(r)
        case .directoryResponse(let r) where r.error.isEmpty && !r.document.isEmpty:
            let hook = r.config ? configHook.withLock { $0 } : directoryHook.withLock { $0 }
            hook?.receive(r.version, r.document)
        case .error(let e):
            logger.warning("coordinator error", metadata: ["allot.reason": "\(e.code): \(e.message)"])
        default:
            break
        }
        // Grants, pushes, redirects and moved owners can all bring the next poll forward.
        wakeLater(now: now)
    }

    /// Releases every lease and closes the connection (the end of `run()`).
    public func shutdown() async {
        // Stop polling (and let a poll already under way finish) before releasing.
        state.withLock { $0.stopped = true }
        await pause(settings.pollInterval)
        // Release everything; an acquire still in flight may be granted after that, so keep
        // releasing what arrives for a short while (bounded) before closing.
        for pass in 0..<6 {
            let (out, waiting) = endpoint.shutdown(now: WallClock.now())
            send(out)
            if !waiting && pass > 0 { break }
            await pause(.milliseconds(50))
        }
        let conns = state.withLock { s -> [any LeaseConnection] in
            defer {
                s.connections = [:]
                s.routing.dropAll()
            }
            return s.connections.values.map(\.connection)
        }
        for c in conns { await c.closeGracefully() }
    }

    /// Follows redirects (connecting to the owner if need be) and retries refused acquires.
    private func redirected(_ refused: [Allot_V1_Grant], now: Instant) {
        guard !refused.isEmpty else { return }
        let dials = state.withLock { s -> [(String, Int)] in
            refused.compactMap { g -> (String, Int)? in
                guard g.outcome == .notOwner && g.hasOwner && !g.owner.address.isEmpty else { return nil }
                return s.routing.redirected(BudgetID(g.budget), to: g.owner.address, now: now).map { (g.owner.address, $0) }
            }
        }
        for (a, generation) in dials { Task { await connect(a, generation: generation) } }
        for g in refused {
            let after = g.outcome == .notOwner ? Duration.milliseconds(20) : max(.milliseconds(10), .nanoseconds(g.retryAfterNs))
            endpoint.retrySoon(BudgetID(g.budget), after: after, now: now)
        }
    }

    /// Waits even when the task is cancelled (shutdown runs after cancellation).
    private func pause(_ d: Duration) async {
        let loop = group.next()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.scheduleTask(in: .nanoseconds(d.nanoseconds)) { c.resume() }
        }
    }
}
