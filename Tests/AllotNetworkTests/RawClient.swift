import AllotTransport
import AllotWire
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A test client that speaks raw bytes (optionally over TLS) to see exactly what the
/// coordinator does with bad input: what it answers, and whether it hangs up.
final class RawClient: Sendable {
    final class Inbox: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex(ByteBuffer())
        let closed = Mutex(false)
        let error = Mutex<String?>(nil)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            _ = bytes.withLock { $0.writeBuffer(&b) }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.error.withLock { $0 = "\(error)" }
            context.close(promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) { closed.withLock { $0 = true } }
    }

    let channel: any Channel
    let inbox: Inbox

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    /// `tls`: nil for plaintext; otherwise a client configuration (certificate optional).
    static func connect(port: Int, tls: TLSConfiguration?) async throws -> RawClient {
        let inbox = Inbox()
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let ch = try await ClientBootstrap(group: testGroup)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(inbox)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawClient(channel: ch, inbox: inbox)
    }

    /// A TLS configuration presenting `role`/`name` from `pki` (or no certificate).
    static func tls(_ pki: TestPKI, role: PeerIdentity.Role? = nil, name: String = "", trust: TestPKI? = nil) throws -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile((trust ?? pki).dir.appendingPathComponent("ca.pem").path))
        c.certificateVerification = .noHostnameVerification
        c.minimumTLSVersion = .tlsv13
        if let role {
            c.certificateChain = try NIOSSLCertificate.fromPEMFile(pki.dir.appendingPathComponent("\(role.rawValue)-\(name).pem").path).map { .certificate($0) }
            c.privateKey = .privateKey(try NIOSSLPrivateKey(file: pki.dir.appendingPathComponent("\(role.rawValue)-\(name)-key.pem").path, format: .pem))
        }
        return c
    }

    func send(_ bytes: [UInt8]) async throws {
        var b = channel.allocator.buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        try await channel.writeAndFlush(b).get()
    }

    func send(_ frames: [Allot_V1_Frame]) async throws {
        var b = ByteBuffer()
        for f in frames { try FrameEncoder.encode(f, into: &b, maxFrameBytes: WireProtocol.defaultMaxFrameBytes) }
        try await send(Array(b.readableBytesView))
    }

    /// Frames received so far (whole ones).
    func frames() -> [Allot_V1_Frame] {
        var b = inbox.bytes.withLock { $0 }
        var out: [Allot_V1_Frame] = []
        while let f = try? FrameDecoder.decodeOne(&b, maxFrameBytes: 1 << 24) { out.append(f) }
        return out
    }

    /// Waits until `condition` holds or `timeout` passes.
    func wait(_ timeout: Duration = .seconds(3), until condition: () -> Bool) async {
        let end = ContinuousClock.now + timeout
        while !condition() && ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(10)) }
    }

    var isClosed: Bool { inbox.closed.withLock { $0 } }

    /// The DER bytes of the certificate the server presented (TLS connections only).
    func serverCertificate() async throws -> [UInt8]? {
        try await channel.nioSSL_peerCertificate().get()?.toDERBytes()
    }

    func errors() -> [Allot_V1_Error] {
        frames().compactMap { if case .error(let e) = $0.body { return e } else { return nil } }
    }

    func close() { channel.close(promise: nil) }
}
