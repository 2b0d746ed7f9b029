import AllotTransport
import AllotWire
import Dispatch
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Fault injection inside the transport (tc netem is not available everywhere, and a proxy
/// in front of a cluster is bypassed once nodes learn the members' real addresses): every
/// frame on a link is delayed by `latency` ± `jitter`, order kept per direction, and `cut()`
/// drops every frame both ways (a partition that sends no reset) until `heal()`; while cut,
/// new connections fail after `connectTimeout`. For rigs and tests; off unless configured.
public final class FaultyLink: Sendable {
    public struct Settings: Sendable, Hashable {
        public var latency: Duration = .zero
        public var jitter: Duration = .zero
        public var connectTimeout: Duration = .seconds(1)
        public init(latency: Duration = .zero, jitter: Duration = .zero) {
            self.latency = latency
            self.jitter = jitter
        }
    }

    private struct State: Sendable {
        var cut = false
        var lastOut = NIODeadline.uptimeNanoseconds(0)
        var lastIn = NIODeadline.uptimeNanoseconds(0)
        var dropped: Int64 = 0
    }

    public let settings: Settings
    private let loop: any EventLoop
    private let state = Mutex(State())

    public init(settings: Settings, loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.settings = settings
        self.loop = loop
    }

    public func cut() { state.withLock { $0.cut = true } }
    public func heal() { state.withLock { $0.cut = false } }
    public var isCut: Bool { state.withLock { $0.cut } }
    /// Frames dropped while cut, both ways.
    public var dropped: Int64 { state.withLock { $0.dropped } }

    /// Wraps `inner`: connections through it see this link's faults.
    public func wrap(_ inner: any LeaseTransport) -> any LeaseTransport { Transport(inner: inner, link: self) }

    /// Runs `body` after the link's delay, after everything scheduled before it in the same
    /// direction; drops it while the link is cut.
    fileprivate func deliver(outbound: Bool, _ body: @escaping @Sendable () -> Void) {
        var d = settings.latency
        if settings.jitter > .zero {
            let j = settings.jitter.nanoseconds
            d += .nanoseconds(Int64.random(in: -j...j))
        }
        let at = state.withLock { s -> NIODeadline? in
            guard !s.cut else {
                s.dropped += 1
                return nil
            }
            let earliest = NIODeadline.now() + .nanoseconds(max(0, d.nanoseconds))
            let last = outbound ? s.lastOut : s.lastIn
            let t = max(earliest, last + .nanoseconds(1))
            if outbound { s.lastOut = t } else { s.lastIn = t }
            return t
        }
        guard let at else { return }
        if settings.latency == .zero && settings.jitter == .zero {
            body()
            return
        }
        loop.scheduleTask(deadline: at) {
            // A frame already in flight when the link was cut is lost too.
            if !self.isCut { body() }
        }
    }

    private struct Transport: LeaseTransport {
        let inner: any LeaseTransport
        let link: FaultyLink

        func connect(onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
                     onClose: @escaping @Sendable () -> Void) async throws -> any LeaseConnection {
            if link.isCut {
                try await Task.sleep(for: link.settings.connectTimeout)
                throw TransportError(.linkCut, "connect timed out: the link is cut (fault injection)")
            }
            let link = self.link
            let conn = try await inner.connect(onFrame: { frame in link.deliver(outbound: false) { onFrame(frame) } },
                                               onClose: onClose)
            return Connection(inner: conn, link: link)
        }
    }

    private struct Connection: LeaseConnection {
        let inner: any LeaseConnection
        let link: FaultyLink
        func send(_ frames: [Allot_V1_Frame]) {
            let inner = self.inner
            link.deliver(outbound: true) { inner.send(frames) }
        }
        func close() { inner.close() }
        func closeGracefully() async { await inner.closeGracefully() }
    }
}

extension FaultyLink {
    /// SIGUSR1 cuts the link, SIGUSR2 heals it (the fault proxy's convention). Cancel the
    /// sources to stop listening.
    public func signals(logger: Logger, what: String = "upstream link") -> [any DispatchSourceSignal] {
        [(SIGUSR1, true), (SIGUSR2, false)].map { sig, cut in
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig)
            src.setEventHandler { [self] in
                if cut { self.cut() } else { self.heal() }
                logger.warning(cut ? "\(what) cut (fault injection)" : "\(what) healed (fault injection)")
            }
            src.resume()
            return src
        }
    }

    /// `dial` with every connection it makes wrapped in this link.
    public func wrap(_ dial: @escaping Dialer) -> Dialer {
        { address in dial(address).map { self.wrap($0) } }
    }
}
