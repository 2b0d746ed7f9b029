import AllotCore
import AllotTransport
import AllotWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The background half of the node library: keeps the `SharedEnforcer`'s leases fed.
///
/// `admit`/`reserve`/`settle` on `enforcer` stay synchronous and local. `run()` — the
/// client's whole life, as a service — connects, polls the enforcer every `pollInterval`,
/// batches many budgets per frame, applies grants and pushes as they arrive, reconnects with
/// exponential backoff and jitter (unanswered acquires are re-sent with the same request id,
/// so retries are idempotent), and when cancelled releases everything unused before it returns.
public final class LeaseClient: Service, Sendable {
    public struct Settings: Sendable {
        public var pollInterval: Duration = .milliseconds(10)
        public var heartbeatInterval: Duration = .seconds(5)
        public var minBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(5)
        public var maxItemsPerFrame = WireProtocol.defaultMaxItemsPerFrame
        public init() {}
    }

    /// Messages in each direction, for the "messages per 1,000 requests" figures.
    public struct Traffic: Sendable, Hashable {
        public var framesSent = 0
        public var framesReceived = 0
        public var connects = 0
        public var connectFailures = 0
    }

    private struct State: Sendable {
        var connection: (any LeaseConnection)?
        var generation = 0
        var traffic = Traffic()
        var heartbeat: UInt64 = 0
        var lastHeartbeat: Instant = .zero
        /// Set when shutdown begins: no more polling.
        var stopped = false
    }

    public let enforcer: SharedEnforcer
    public let settings: Settings
    private let transport: any LeaseTransport
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    private let stepLock = Mutex(())

    /// `group`: where the periodic poll runs (an event loop of it).
    public init(enforcer: SharedEnforcer, transport: any LeaseTransport, settings: Settings = Settings(), logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = group
        self.enforcer = enforcer
        self.transport = transport
        self.settings = settings
        self.logger = logger
    }

    public var traffic: Traffic { state.withLock { $0.traffic } }
    public var isConnected: Bool { state.withLock { $0.connection != nil } }

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
        // The periodic poll runs on an event loop, not in this task: a process whose Swift
        // concurrency threads are busy with CPU-bound work still refills its leases on time.
        let poller = group.next().scheduleRepeatedTask(initialDelay: .zero,
                                                       delay: .nanoseconds(settings.pollInterval.nanoseconds)) { [weak self] _ in
            guard let self, self.isConnected else { return }
            self.step(now: WallClock.now())
        }
        defer { poller.cancel() }
        var backoff = settings.minBackoff
        while !Task.isCancelled && !stopping() {
            if !isConnected {
                do {
                    try await connect()
                    backoff = settings.minBackoff
                } catch {
                    state.withLock { $0.traffic.connectFailures += 1 }
                    logger.debug("connect failed", metadata: ["allot.error": "\(error)"])
                    let jitter = Double.random(in: 0.5...1.0)
                    try? await Task.sleep(for: backoff * jitter)
                    backoff = min(backoff * 2, settings.maxBackoff)
                    continue
                }
            }
            try? await Task.sleep(for: settings.pollInterval * 5)
        }
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
    }

    private func stepLocked(now: Instant) {
        guard !state.withLock({ $0.stopped }) else { return }
        let (events, outgoing) = enforcer.withEnforcer { e in (e.tick(now: now), e.poll(now: now)) }
        for case .leaseExpired(let h, let permits) in events where permits > 0 {
            logger.warning("concurrency lease ended with requests in flight", metadata: ["allot.budget": "\(h)"])
        }
        var frames = Self.frames(for: outgoing, maxItems: settings.maxItemsPerFrame)
        state.withLock { s in
            if s.connection != nil && now - s.lastHeartbeat >= settings.heartbeatInterval {
                s.heartbeat += 1
                s.lastHeartbeat = now
                frames.append(.heartbeat(s.heartbeat, reply: false))
            }
        }
        send(frames)
    }

    /// Batches acquires and releases, many budgets per frame.
    static func frames(for outgoing: [Enforcer.Outgoing], maxItems: Int) -> [Allot_V1_Frame] {
        var acquires: [AcquireRequest] = []
        var releases: [ReleaseRequest] = []
        for m in outgoing {
            switch m {
            case .acquire(let a): acquires.append(a)
            case .release(let r): releases.append(r)
            }
        }
        var frames: [Allot_V1_Frame] = []
        for chunk in stride(from: 0, to: acquires.count, by: maxItems) {
            frames.append(.acquire(Array(acquires[chunk..<min(chunk + maxItems, acquires.count)])))
        }
        for chunk in stride(from: 0, to: releases.count, by: maxItems) {
            frames.append(.release(Array(releases[chunk..<min(chunk + maxItems, releases.count)])))
        }
        return frames
    }

    private func send(_ frames: [Allot_V1_Frame]) {
        guard !frames.isEmpty else { return }
        let conn = state.withLock { s -> (any LeaseConnection)? in
            if s.connection != nil { s.traffic.framesSent += frames.count }
            return s.connection
        }
        conn?.send(frames)
    }

    private func connect() async throws {
        let generation = state.withLock { s -> Int in s.generation += 1; return s.generation }
        let conn = try await transport.connect(
            onFrame: { [weak self] frame in self?.received(frame) },
            onClose: { [weak self] in self?.closed(generation: generation) })
        state.withLock { s in
            s.connection = conn
            s.traffic.connects += 1
            s.traffic.framesSent += 1
        }
        conn.send([.hello(name: "\(enforcer.withEnforcer { $0.settings.node })")])
        logger.debug("connected")
    }

    private func closed(generation: Int) {
        state.withLock { s in
            if s.generation == generation { s.connection = nil }
        }
    }

    func received(_ frame: Allot_V1_Frame) {
        state.withLock { $0.traffic.framesReceived += 1 }
        let now = WallClock.now()
        switch frame.body {
        case .grants(let batch), .push(let batch):
            enforcer.withEnforcer { e in
                for g in batch.items where g.outcome == .granted { _ = e.receive(Grant(wire: g), now: now) }
            }
            for g in batch.items where g.outcome == .unknownBudget {
                logger.error("coordinator does not know budget", metadata: ["allot.budget": "\(g.budget)"])
            }
        case .heartbeat(let h) where !h.reply:
            send([.heartbeat(h.sequence, reply: true)])
        case .error(let e):
            logger.warning("coordinator error", metadata: ["allot.reason": "\(e.code): \(e.message)"])
        default:
            break
        }
    }

    /// Releases every lease and closes the connection (the end of `run()`).
    public func shutdown() async {
        // Stop polling (and let a poll already under way finish) before releasing.
        state.withLock { $0.stopped = true }
        await pause(settings.pollInterval)
        // Release everything; an acquire still in flight may be granted after that, so keep
        // releasing what arrives for a short while (bounded) before closing.
        for pass in 0..<6 {
            let (out, waiting) = enforcer.withEnforcer { e -> ([Enforcer.Outgoing], Bool) in
                let now = WallClock.now()
                return (e.shutdown(now: now), e.awaitingGrants)
            }
            send(Self.frames(for: out, maxItems: settings.maxItemsPerFrame))
            if !waiting && pass > 0 { break }
            await pause(.milliseconds(50))
        }
        let conn = state.withLock { s -> (any LeaseConnection)? in
            defer { s.connection = nil }
            return s.connection
        }
        await conn?.closeGracefully()
    }

    /// Waits even when the task is cancelled (shutdown runs after cancellation).
    private func pause(_ d: Duration) async {
        let loop = group.next()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            loop.scheduleTask(in: .nanoseconds(d.nanoseconds)) { c.resume() }
        }
    }
}
