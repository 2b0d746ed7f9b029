import AllotWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// The lease protocol over mutual TLS 1.3. The coordinator's certificate must carry a
/// `coordinator` identity in the same trust domain; otherwise the connection is closed before
/// any grant is believed.
public struct TLSLeaseTransport: LeaseTransport {
    public let host: String
    public let port: Int
    public let tls: TLSMaterialStore
    public let group: any EventLoopGroup
    public var maxFrameBytes = WireProtocol.defaultMaxFrameBytes
    public var connectTimeout: TimeAmount = .seconds(3)

    public init(host: String, port: Int, tls: TLSMaterialStore, group: any EventLoopGroup) {
        self.host = host
        self.port = port
        self.tls = tls
        self.group = group
    }

    public func connect(onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
                        onClose: @escaping @Sendable () -> Void) async throws -> any LeaseConnection {
        let material = tls.current
        let maxFrame = maxFrameBytes
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ops = channel.pipeline.syncOperations
                    try ops.addHandler(try NIOSSLClientHandler(context: material.clientContext, serverHostname: nil))
                    try ops.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxFrame, maxItems: 1 << 16)))
                    try ops.addHandler(MessageToByteHandler(FrameEncoder(maxFrameBytes: maxFrame)))
                    try ops.addHandler(LeaseClientHandler(trustDomain: material.identity.trustDomain, onFrame: onFrame, onClose: onClose))
                }
            }
            .connect(host: host, port: port).get()
        return ChannelConnection(channel: channel)
    }
}

extension TLSLeaseTransport {
    /// Transports to coordinators by `HOST:PORT` (nil for an address that is not one).
    public static func dialer(tls: TLSMaterialStore, group: any EventLoopGroup) -> @Sendable (String) -> (any LeaseTransport)? {
        { address in
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
                  (1...65535).contains(port) else { return nil }
            return TLSLeaseTransport(host: String(address[..<colon]), port: port, tls: tls, group: group)
        }
    }
}

struct ChannelConnection: LeaseConnection {
    let channel: any Channel
    func send(_ frames: [Allot_V1_Frame]) {
        guard !frames.isEmpty else { return }
        channel.eventLoop.execute {
            for f in frames { channel.write(f, promise: nil) }
            channel.flush()
        }
    }
    func close() { channel.close(promise: nil) }
    /// Runs on the event loop after the writes queued before it, so they are flushed first.
    func closeGracefully() async {
        try? await channel.eventLoop.submit { channel.flush() }.get()
        try? await channel.close().get()
    }
}

/// Checks the coordinator's identity on its first frame, then hands frames to the client.
final class LeaseClientHandler: ChannelInboundHandler {
    typealias InboundIn = Allot_V1_Frame
    private let trustDomain: String
    private let onFrame: @Sendable (Allot_V1_Frame) -> Void
    private let onClose: @Sendable () -> Void
    private var verified = false

    init(trustDomain: String, onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void, onClose: @escaping @Sendable () -> Void) {
        self.trustDomain = trustDomain
        self.onFrame = onFrame
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !verified {
            do {
                let cert = try context.pipeline.syncOperations.nioSSL_peerCertificate()
                _ = try PeerVerifier.verify(cert, trustDomain: trustDomain, roles: [.coordinator])
                verified = true
            } catch {
                context.close(promise: nil)
                return
            }
        }
        onFrame(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }
}
