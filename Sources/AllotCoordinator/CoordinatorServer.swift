import AllotCore
import AllotTransport
import AllotWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import Tracing

/// Serves the lease protocol over mutual TLS. A thin shell: TLS and framing from NIO, the
/// protocol rules from `Session`, the books from `CoordinatorCore`.
public final class CoordinatorServer: Sendable {
    public let core: CoordinatorCore
    private let tls: TLSMaterialStore
    private let group: any EventLoopGroup
    private let logger: Logger
    private let tracer: (any Tracer)?
    private let channel = Mutex<(any Channel)?>(nil)
    private let ticker = Mutex<WakeTimer?>(nil)
    private let open = OpenConnections()

    /// `tracer`: a `coordinator.acquire` span for each acquire frame served (nil: tracing off).
    public init(core: CoordinatorCore, tls: TLSMaterialStore, group: any EventLoopGroup, logger: Logger, tracer: (any Tracer)? = nil) {
        self.tracer = tracer
        self.core = core
        self.tls = tls
        self.group = group
        self.logger = logger
    }

    /// Binds and starts serving; returns the bound address (port 0 picks a free port).
    @discardableResult
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let core = self.core, tls = self.tls, logger = self.logger, tracer = self.tracer
        let maxFrame = core.settings.maxFrameBytes, maxItems = core.settings.session.maxItemsPerFrame
        let limits = core.settings.listener
        let open = self.open
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: limits.writeLowWatermark, high: limits.writeHighWatermark))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ops = channel.pipeline.syncOperations
                    try ops.addHandler(NIOSSLServerHandler(context: tls.current.serverContext))
                    try ops.addHandler(IdleStateHandler(readTimeout: .nanoseconds(limits.idleTimeout.nanoseconds)))
                    try ops.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrame, maxItems: maxItems)))
                    try ops.addHandler(MessageToByteHandler(FrameEncoder(maxFrameBytes: maxFrame)))
                    try ops.addHandler(CoordinatorConnectionHandler(core: core, tls: tls, open: open, logger: logger, tracer: tracer))
                }
            }
        let ch = try await bootstrap.bind(host: host, port: port).get()
        channel.withLock { $0 = ch }
        // The machine's deadlines, not a fixed poll, say when to tick.
        let timer = WakeTimer(loop: group.next()) { core.tick(now: $0) }
        ticker.withLock { $0 = timer }
        core.onWake { timer.offer($0) }
        logger.info("coordinator listening", metadata: ["allot.address": "\(ch.localAddress!)"])
        return ch.localAddress!
    }

    /// Connections open now (TLS handshakes included).
    public var openConnections: Int { open.count.load(ordering: .relaxed) }

    /// Stops accepting, tells every peer, closes.
    public func shutdown() async throws {
        core.onWake(nil)
        ticker.withLock { $0?.stop(); $0 = nil }
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

/// How many connections the listener has open (handshakes included).
final class OpenConnections: Sendable {
    let count = Atomic<Int>(0)
}

/// One connection: identity from the certificate at the first frame, then one `Session`.
/// Deadlines close it when the TLS handshake or the hello does not come in time, or when the
/// peer goes silent; once a frame could not be written it is closed and nothing more is written.
final class CoordinatorConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Allot_V1_Frame
    typealias OutboundOut = Allot_V1_Frame
    /// Who the peer is (from its certificate, checked against the trust domain and deny list).
    typealias PeerLookup = (ChannelHandlerContext) throws -> (identity: PeerIdentity, notValidAfter: Date, serial: String)

    private let core: CoordinatorCore
    private let peer: PeerLookup
    private let open: OpenConnections
    private var logger: Logger
    private var session: Session?
    private var connectionID: UInt64?
    private var counted = false
    /// Set once the connection is being closed: no path writes to it again.
    private var closing = false
    private var deadline: Scheduled<Void>?
    /// When the peer's certificate expires: the connection ends then.
    private var expiry: Scheduled<Void>?
    private var serial = ""
    private let tracer: (any Tracer)?

    /// The peer is who its TLS certificate says, in this coordinator's trust domain and not denied.
    convenience init(core: CoordinatorCore, tls: TLSMaterialStore, open: OpenConnections, logger: Logger, tracer: (any Tracer)?) {
        self.init(core: core, open: open, logger: logger, tracer: tracer) { context in
            let material = tls.current
            return try PeerVerifier.inspect(try context.pipeline.syncOperations.nioSSL_peerCertificate(),
                                            trustDomain: material.identity.trustDomain, roles: [.node, .admin, .coordinator],
                                            denyList: material.denyList)
        }
    }

    /// `peer` says who the peer is (handler tests pass an identity without TLS).
    init(core: CoordinatorCore, open: OpenConnections, logger: Logger, tracer: (any Tracer)? = nil, peer: @escaping PeerLookup) {
        self.tracer = tracer
        self.core = core
        self.peer = peer
        self.open = open
        self.logger = logger
    }

    private var limits: ListenerLimits { core.settings.listener }

    func channelActive(context: ChannelHandlerContext) {
        counted = true
        if open.count.wrappingAdd(1, ordering: .relaxed).newValue > limits.maxConnections {
            shut(context, "connection_cap", "more than \(limits.maxConnections) connections open")
        } else {
            arm(context, after: limits.handshakeTimeout, "handshake_timeout", "no TLS handshake within \(limits.handshakeTimeout)")
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent, session == nil {
            arm(context, after: limits.helloTimeout, "hello_timeout", "no hello within \(limits.helloTimeout) of the handshake")
        } else if let e = event as? IdleStateHandler.IdleStateEvent, e == .read, session?.identity.role != .coordinator {
            // Coordinators' gossip links carry traffic one way, a probe per member in turn: not idle.
            shut(context, "idle_timeout", "nothing received for \(limits.idleTimeout)")
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Closes the connection unless the next stage is reached first.
    private func arm(_ context: ChannelHandlerContext, after: Duration, _ reason: String, _ message: String) {
        deadline?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: .nanoseconds(after.nanoseconds)) {
            let (handler, context) = loopBound.value
            handler.shut(context, reason, message)
        }
    }

    /// Closes without a word (the peer is silent or the limit is ours), counted by reason.
    private func shut(_ context: ChannelHandlerContext, _ reason: String, _ message: String) {
        guard !closing else {
            context.close(promise: nil) // a closing refusal still waiting on its write
            return
        }
        closing = true
        deadline?.cancel()
        core.count(closedBy: reason)
        warn("closing connection", reason, message)
        context.close(promise: nil)
    }

    private func warn(_ text: Logger.Message, _ reason: String, _ message: String) {
        guard let held = core.warnings.admit(reason, now: WallClock.now()) else { return }
        logger.warning(text, metadata: ["allot.reason": "\(message)", "allot.held_back": "\(held)"])
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Replies pile up (a peer that sends but does not read): stop reading until they drain.
        let writable = context.channel.isWritable
        if !writable { core.count(backpressure: ()) }
        context.channel.setOption(.autoRead, value: writable).whenFailure { _ in }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let frame = unwrapInboundIn(data)
        let now = WallClock.now()
        core.count(frame: frame.kind)
        if session == nil {
            do {
                let peer = try self.peer(context)
                session = Session(identity: peer.identity, limits: core.settings.session, now: now)
                serial = peer.serial
                logger[metadataKey: "allot.peer"] = "\(peer.identity.uri)"
                let left = peer.notValidAfter.timeIntervalSinceNow
                if left < 400 * 86_400 {
                    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    expiry = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(max(0, left) * 1e9))) {
                        let (handler, context) = bound.value
                        handler.shut(context, "certificate_expired", "the peer's certificate expired")
                    }
                }
            } catch {
                core.count(rejected: (error as? TransportError)?.code == .denied ? "denied" : "identity")
                reject(context: context, .permissionDenied, "\(error)", closing: true)
                return
            }
        }
        switch session!.frameReceived(frame, now: now) {
        case .accept(let incarnation):
            guard let (id, ack) = core.connected(session!.identity, incarnation: incarnation, serial: serial,
                                                 sink: ChannelSink(channel: context.channel)) else {
                reject(context: context, .rateLimited, "\(session!.identity.uri) already has \(limits.maxConnectionsPerIdentity) connections open", closing: true)
                return
            }
            deadline?.cancel()
            connectionID = id
            logger.debug("peer connected")
            context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
        case .acquire(let items):
            // Lease handling, traced: who asked, for how many budgets, how many frames answered.
            let span = tracer?.startSpan("coordinator.acquire", context: .topLevel, ofKind: .server)
            let frames = core.acquire(items, from: NodeID(session!.identity.name), now: now)
            if let span {
                span.attributes["allot.node"] = session!.identity.name
                span.attributes["allot.items"] = items.count
                span.attributes["allot.answers"] = frames.count
                span.end()
            }
            for f in frames { context.write(wrapOutboundOut(f), promise: nil) }
            context.flush()
        case .release(let items):
            core.release(items, from: NodeID(session!.identity.name), now: now)
        case .heartbeat(let h):
            context.writeAndFlush(wrapOutboundOut(.heartbeat(h.sequence, reply: true)), promise: nil)
        case .status(let after):
            context.writeAndFlush(wrapOutboundOut(core.status(after: after)), promise: nil)
        case .directory(let r) where r.config:
            core.config.handle(r, from: session!.identity, reply: ChannelSink(channel: context.channel), core: core)
        case .directory(let r):
            core.directory.handle(r, from: session!.identity, reply: ChannelSink(channel: context.channel), nodes: { [core] in core.nodeSinks })
        case .lookup(let budgets, let query):
            context.writeAndFlush(wrapOutboundOut(core.status(of: budgets, query: query)), promise: nil)
        case .gossip(let g):
            if let e = core.gossip(g, from: session!.identity) { context.writeAndFlush(wrapOutboundOut(e), promise: nil) }
        case .auditHead(let h):
            if let e = core.auditHead(h, from: NodeID(session!.identity.name), now: now) { context.writeAndFlush(wrapOutboundOut(e), promise: nil) }
        case .reject(let code, let message, let closing):
            core.count(rejected: Self.reason(code))
            reject(context: context, code, message, closing: closing)
        case .ignore:
            break
        }
    }

    /// Answers with an error frame (rate-limited warning, counted); closes after it if `closing`.
    private func reject(context: ChannelHandlerContext, _ code: Allot_V1_Error.Code, _ message: String, closing: Bool) {
        guard !self.closing else { return }
        warn(closing ? "refusing peer" : "rejected frame", Self.reason(code), message)
        let f = context.writeAndFlush(wrapOutboundOut(.error(code, message, closing: closing)))
        if closing {
            self.closing = true
            deadline?.cancel()
            session?.close()
            if code != .permissionDenied && code != .shuttingDown && code != .rateLimited { core.count(closedBy: Self.reason(code)) }
            let channel = context.channel
            f.whenComplete { _ in channel.close(promise: nil) }
            // A peer that does not read never lets the error frame go: close it regardless.
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closing {
            context.close(promise: nil)
            return
        }
        if let w = error as? WireError {
            core.count(frameError: w.code.description)
            if w.code == .unsendable {
                // A frame of ours could not be encoded: writing an error about it would only fail
                // again. Close this one connection with the reason in the log.
                shut(context, "unsendable", w.message)
                return
            }
            let code: Allot_V1_Error.Code = switch w.code {
            case .frameTooLarge: .frameTooLarge
            case .tooManyItems: .tooManyItems
            default: .malformedFrame
            }
            reject(context: context, code, w.message, closing: true)
            return
        }
        if session == nil {
            let reason = PeerVerifier.handshakeFailureReason(error)
            core.count(handshakeFailure: reason)
            warn("handshake failed", "handshake_" + reason, "\(error)")
        } else {
            logger.debug("connection error", metadata: ["allot.error": "\(error)"])
        }
        closing = true
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        expiry?.cancel()
        if counted { open.count.wrappingSubtract(1, ordering: .relaxed) }
        counted = false
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
