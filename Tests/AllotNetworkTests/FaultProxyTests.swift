import AllotTesting
import AllotTransport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The fault-injecting proxy the cluster rigs put between members.
@Suite("Fault proxy", .serialized)
struct FaultProxyTests {
    final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.writeAndFlush(data, promise: nil) }
    }

    /// Completes its promise with the first bytes read, or fails when the connection closes.
    final class FirstReply: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let promise: EventLoopPromise<ByteBuffer>
        init(_ p: EventLoopPromise<ByteBuffer>) { promise = p }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { promise.succeed(unwrapInboundIn(data)) }
        func channelInactive(context: ChannelHandlerContext) { promise.fail(ChannelError.eof) }
    }

    func roundTrip(port: Int) async throws -> Duration {
        let loop = testGroup.next()
        let promise = loop.makePromise(of: ByteBuffer.self)
        let ch = try await ClientBootstrap(group: loop)
            .channelInitializer { c in c.eventLoop.makeCompletedFuture { try c.pipeline.syncOperations.addHandler(FirstReply(promise)) } }
            .connect(host: "127.0.0.1", port: port).get()
        defer { ch.close(promise: nil) }
        let start = ContinuousClock.now
        try await ch.writeAndFlush(ByteBuffer(string: "ping")).get()
        let reply = try await promise.futureResult.get()
        #expect(String(buffer: reply) == "ping")
        return ContinuousClock.now - start
    }

    @Test("adds latency both ways, cuts connections when partitioned, and carries traffic again when healed")
    func faults() async throws {
        let echo = try await ServerBootstrap(group: testGroup)
            .childChannelInitializer { c in c.eventLoop.makeCompletedFuture { try c.pipeline.syncOperations.addHandler(Echo()) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { echo.close(promise: nil) }
        var s = FaultProxy.Settings()
        s.latency = .milliseconds(40)
        s.jitter = .milliseconds(5)
        let proxy = FaultProxy(upstreamHost: "127.0.0.1", upstreamPort: echo.localAddress!.port!, settings: s, group: testGroup)
        let port = try await proxy.start(host: "127.0.0.1", port: 0).port!
        let direct = try await roundTrip(port: echo.localAddress!.port!)
        let proxied = try await roundTrip(port: port)
        print("fault proxy: echo round trip \(direct) direct, \(proxied) through 40±5 ms each way")
        #expect(proxied >= .milliseconds(70) && proxied < .milliseconds(400))
        proxy.partition()
        await #expect(throws: (any Error).self) { _ = try await roundTrip(port: port) }
        proxy.heal()
        #expect(try await roundTrip(port: port) >= .milliseconds(70))
        await proxy.stop()
    }
}
