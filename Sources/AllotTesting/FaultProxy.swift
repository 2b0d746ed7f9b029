import NIOCore
import NIOPosix
import Synchronization

/// A fault-injecting TCP proxy for tests and rigs (tc netem is not available everywhere):
/// every chunk of bytes is delayed by `latency` ± `jitter` (order kept per direction); with
/// probability `loss` a chunk is held back one extra `retransmit` time, as TCP would after
/// losing a segment. `partition()` cuts every connection and refuses new ones until `heal()`.
public final class FaultProxy: Sendable {
    public struct Settings: Sendable {
        public var latency: Duration = .zero
        public var jitter: Duration = .zero
        public var loss = 0.0
        public var retransmit: Duration = .milliseconds(200)
        public init() {}
    }

    private struct State: Sendable {
        var partitioned = false
        var channels: [ObjectIdentifier: any Channel] = [:]
        var forwarded: Int64 = 0
    }

    public let settings: Settings
    private let upstreamHost: String
    private let upstreamPort: Int
    private let group: any EventLoopGroup
    private let state = Mutex(State())
    private let server = Mutex<(any Channel)?>(nil)

    public init(upstreamHost: String, upstreamPort: Int, settings: Settings, group: any EventLoopGroup) {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
        self.settings = settings
        self.group = group
    }

    public var isPartitioned: Bool { state.withLock { $0.partitioned } }
    public var bytesForwarded: Int64 { state.withLock { $0.forwarded } }

    @discardableResult
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let ch = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] inbound in
                inbound.eventLoop.makeCompletedFuture {
                    try inbound.pipeline.syncOperations.addHandler(Relay(proxy: self))
                }
            }
            .bind(host: host, port: port).get()
        server.withLock { $0 = ch }
        return ch.localAddress!
    }

    /// Cuts every connection through the proxy and refuses new ones.
    public func partition() {
        let open = state.withLock { s -> [any Channel] in
            s.partitioned = true
            return Array(s.channels.values)
        }
        for c in open { c.close(promise: nil) }
    }

    public func heal() { state.withLock { $0.partitioned = false } }

    public func stop() async {
        partition()
        if let ch = server.withLock({ $0 }) { try? await ch.close() }
    }

    // MARK: relaying

    fileprivate func opened(_ c: any Channel) -> Bool {
        state.withLock { s in
            guard !s.partitioned else { return false }
            s.channels[ObjectIdentifier(c)] = c
            return true
        }
    }

    fileprivate func closed(_ c: any Channel) { state.withLock { _ = $0.channels.removeValue(forKey: ObjectIdentifier(c)) } }

    fileprivate func delay() -> Duration {
        var d = settings.latency
        if settings.jitter > .zero {
            let j = settings.jitter.nanoseconds
            d += .nanoseconds(Int64.random(in: -j...j))
        }
        if settings.loss > 0 && Double.random(in: 0..<1) < settings.loss { d += settings.retransmit }
        return max(.zero, d)
    }

    fileprivate func connectUpstream(for inbound: any Channel, relay: Relay) -> EventLoopFuture<any Channel> {
        ClientBootstrap(group: inbound.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { out in
                out.eventLoop.makeCompletedFuture { try out.pipeline.syncOperations.addHandler(Relay(proxy: self, peer: inbound)) }
            }
            .connect(host: upstreamHost, port: upstreamPort)
    }

    fileprivate func count(_ n: Int) { state.withLock { $0.forwarded += Int64(n) } }
}

/// One side of a proxied connection: bytes read here are written to `peer` after a delay.
private final class Relay: ChannelInboundHandler, @unchecked Sendable { // confined to its event loop
    typealias InboundIn = ByteBuffer
    private let proxy: FaultProxy
    private var peer: (any Channel)?
    private var pending: [ByteBuffer] = []
    private var lastDue = NIODeadline.uptimeNanoseconds(0)

    init(proxy: FaultProxy, peer: (any Channel)? = nil) {
        self.proxy = proxy
        self.peer = peer
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        guard proxy.opened(channel) else {
            context.close(promise: nil)
            return
        }
        if peer == nil {
            // The client side: dial the upstream; its relay writes back to us.
            let loop = context.eventLoop
            proxy.connectUpstream(for: channel, relay: self).hop(to: loop).whenComplete { [self] result in
                switch result {
                case .success(let up):
                    guard self.proxy.opened(up) else {
                        up.close(promise: nil)
                        channel.close(promise: nil)
                        return
                    }
                    self.peer = up
                    for b in self.pending { self.forward(b, on: loop) }
                    self.pending = []
                case .failure:
                    channel.close(promise: nil)
                }
            }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard peer != nil else {
            pending.append(bytes)
            return
        }
        forward(bytes, on: context.eventLoop)
    }

    private func forward(_ bytes: ByteBuffer, on loop: any EventLoop) {
        guard let peer else { return }
        let due = max(lastDue, NIODeadline.now() + .nanoseconds(proxy.delay().nanoseconds))
        lastDue = due
        proxy.count(bytes.readableBytes)
        loop.scheduleTask(deadline: due) { peer.writeAndFlush(bytes, promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        proxy.closed(context.channel)
        // Close the other side once what is scheduled has been written.
        if let peer {
            context.eventLoop.scheduleTask(deadline: max(lastDue, .now())) { peer.close(promise: nil) }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
