import AllotCore
import AllotTransport
import AllotWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Serves the lease protocol over mutual TLS. A thin shell: TLS and framing from NIO, the
/// protocol rules from `Session`, the books from `CoordinatorCore`.
public final class CoordinatorServer: Sendable {
    public let core: CoordinatorCore
    private let tls: TLSMaterialStore
    private let group: any EventLoopGroup
    private let logger: Logger
    private let channel = Mutex<(any Channel)?>(nil)
    private let ticker = Mutex<RepeatedTask?>(nil)

    public init(core: CoordinatorCore, tls: TLSMaterialStore, group: any EventLoopGroup, logger: Logger) {
        self.core = core
        self.tls = tls
        self.group = group
        self.logger = logger
    }

    /// Binds and starts serving; returns the bound address (port 0 picks a free port).
    @discardableResult
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let core = self.core, tls = self.tls, logger = self.logger
        let maxFrame = core.settings.maxFrameBytes
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ops = channel.pipeline.syncOperations
                    try ops.addHandler(NIOSSLServerHandler(context: tls.current.serverContext))
                    try ops.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrame)))
                    try ops.addHandler(MessageToByteHandler(FrameEncoder(maxFrameBytes: maxFrame)))
                    try ops.addHandler(CoordinatorConnectionHandler(core: core, trustDomain: tls.current.identity.trustDomain, logger: logger))
                }
            }
        let ch = try await bootstrap.bind(host: host, port: port).get()
        channel.withLock { $0 = ch }
        let task = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
            core.tick(now: WallClock.now())
        }
        ticker.withLock { $0 = task }
        logger.info("coordinator listening", metadata: ["allot.address": "\(ch.localAddress!)"])
        return ch.localAddress!
    }

    /// Stops accepting, tells every peer, closes.
    public func shutdown() async throws {
        ticker.withLock { $0?.cancel(); $0 = nil }
        core.drain()
        if let ch = channel.withLock({ $0 }) { try? await ch.close() }
    }
}

/// Delivers frames to one NIO connection from any thread.
struct ChannelSink: FrameSink {
    let channel: any Channel
    func send(_ frame: Allot_V1_Frame) {
        channel.eventLoop.execute {
            guard channel.isActive else { return }
            channel.writeAndFlush(frame, promise: nil)
        }
    }
    func close() { channel.close(promise: nil) }
}

/// One connection: identity from the certificate at the first frame, then one `Session`.
final class CoordinatorConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Allot_V1_Frame
    typealias OutboundOut = Allot_V1_Frame

    private let core: CoordinatorCore
    private let trustDomain: String
    private var logger: Logger
    private var session: Session?
    private var connectionID: UInt64?

    init(core: CoordinatorCore, trustDomain: String, logger: Logger) {
        self.core = core
        self.trustDomain = trustDomain
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let now = WallClock.now()
        core.count(frame: frame.kind)
        if session == nil {
            do {
                let cert = try context.pipeline.syncOperations.nioSSL_peerCertificate()
                let id = try PeerVerifier.verify(cert, trustDomain: trustDomain, roles: [.node, .admin, .coordinator])
                session = Session(identity: id, limits: core.settings.session, now: now)
                logger[metadataKey: "allot.peer"] = "\(id.uri)"
            } catch {
                core.count(rejected: "identity")
                logger.warning("refusing peer", metadata: ["allot.reason": "\(error)"])
                reject(context: context, .permissionDenied, "\(error)", closing: true)
                return
            }
        }
        let action = session!.frameReceived(frame, now: now)
        switch action {
        case .accept(let incarnation):
            let (id, ack) = core.connected(session!.identity, incarnation: incarnation, sink: ChannelSink(channel: context.channel))
            connectionID = id
            logger.debug("peer connected")
            context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
        case .acquire(let items):
            let grants = core.acquire(items, from: NodeID(session!.identity.name), now: now)
            context.writeAndFlush(wrapOutboundOut(grants), promise: nil)
        case .release(let items):
            core.release(items, from: NodeID(session!.identity.name), now: now)
        case .heartbeat(let h):
            context.writeAndFlush(wrapOutboundOut(.heartbeat(h.sequence, reply: true)), promise: nil)
        case .status:
            context.writeAndFlush(wrapOutboundOut(core.status()), promise: nil)
        case .gossip(let g):
            if let e = core.gossip(g, from: session!.identity) { context.writeAndFlush(wrapOutboundOut(e), promise: nil) }
        case .reject(let code, let message, let closing):
            core.count(rejected: Self.reason(code))
            logger.warning("rejected frame", metadata: ["allot.reason": "\(message)"])
            reject(context: context, code, message, closing: closing)
        case .ignore:
            break
        }
    }

    private func reject(context: ChannelHandlerContext, _ code: Allot_V1_Error.Code, _ message: String, closing: Bool) {
        let f = context.writeAndFlush(wrapOutboundOut(.error(code, message, closing: closing)))
        if closing {
            session?.close()
            let channel = context.channel
            f.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let w = error as? WireError {
            core.count(frameError: w.code.description)
            logger.warning("bad frame", metadata: ["allot.reason": "\(w)"])
            let code: Allot_V1_Error.Code = w.code == .frameTooLarge ? .frameTooLarge : .malformedFrame
            reject(context: context, code, w.message, closing: true)
            return
        }
        if session == nil {
            let reason = PeerVerifier.handshakeFailureReason(error)
            core.count(handshakeFailure: reason)
            logger.info("handshake failed", metadata: ["allot.reason": "\(reason)", "allot.error": "\(error)"])
        } else {
            logger.debug("connection error", metadata: ["allot.error": "\(error)"])
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let id = connectionID { core.disconnected(id) }
        context.fireChannelInactive()
    }

    static func reason(_ code: Allot_V1_Error.Code) -> String {
        switch code {
        case .protocolViolation: "protocol_violation"
        case .unsupportedVersion: "unsupported_version"
        case .frameTooLarge: "frame_too_large"
        case .malformedFrame: "malformed_frame"
        case .permissionDenied: "permission_denied"
        case .rateLimited: "rate_limited"
        case .tooManyItems: "too_many_items"
        case .shuttingDown: "shutting_down"
        default: "other"
        }
    }
}
