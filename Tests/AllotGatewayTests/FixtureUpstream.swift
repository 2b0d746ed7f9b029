import AllotGateway
import CompressNIO
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A test upstream that is not ours: it replays recorded-shape answers (`Fixtures/`) as they
/// are, whatever the request asked, and records every request that reached it.
///
/// Request headers: `x-fixture: NAME` picks the file (default: `models.json`);
/// `x-fixture-gzip: 1` sends it gzip-compressed; `x-fixture-replace: FROM=>TO` edits the
/// recorded bytes first (hostile usage values, say). Every answer carries the provider's own
/// rate-limit headers and a cookie, which the gateway must not pass on.
final class FixtureUpstream: Sendable {
    struct Arrival: Sendable {
        var method: String
        var target: String
        var headers: [String: String]
    }

    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func fixture(_ name: String) throws -> Data { try Data(contentsOf: directory.appendingPathComponent(name)) }

    private let arrivals = Mutex<[Arrival]>([])
    private let task = Mutex<Task<Void, any Error>?>(nil)
    var received: [Arrival] { arrivals.withLock { $0 } }

    /// Starts on an ephemeral loopback port; returns it.
    func start() async throws -> Int {
        let port = AsyncStream.makeStream(of: Int.self)
        let app = Application(
            responder: CallbackResponder<BasicRequestContext> { [self] request, _ in try await self.respond(request) },
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in port.continuation.yield(channel.localAddress?.port ?? 0) },
            logger: Logger(label: "fixture-upstream", factory: { _ in SwiftLogNoOpLogHandler() }))
        task.withLock { $0 = Task { try await app.runService() } }
        for await p in port.stream { return p }
        throw CancellationError()
    }

    func stop() { task.withLock { $0?.cancel() } }

    private func respond(_ request: Request) async throws -> Response {
        var headers: [String: String] = [:]
        for f in request.headers { headers[f.name.canonicalName] = f.value }
        arrivals.withLock { $0.append(Arrival(method: request.method.rawValue, target: request.uri.string, headers: headers)) }
        _ = try await request.body.collect(upTo: 16 << 20)
        let name = headers["x-fixture"] ?? "models.json"
        var data = try Self.fixture(name)
        if let edit = headers["x-fixture-replace"], let arrow = edit.range(of: "=>") {
            let text = String(decoding: data, as: UTF8.self)
            data = Data(text.replacingOccurrences(of: String(edit[..<arrow.lowerBound]), with: String(edit[arrow.upperBound...])).utf8)
        }
        var body = ByteBuffer(data: data)
        var fields = HTTPFields()
        fields[.contentType] = name.hasSuffix(".sse") ? "text/event-stream" : "application/json"
        for (k, v) in [("x-ratelimit-remaining-tokens", "149984"), ("x-ratelimit-limit-requests", "10000"),
                       ("anthropic-ratelimit-tokens-remaining", "79000"), ("set-cookie", "__cf_bm=upstream; path=/"),
                       ("openai-processing-ms", "190"), ("connection", "x-upstream-hop"), ("x-upstream-hop", "1")] {
            fields.append(HTTPField(name: HTTPField.Name(k)!, value: v))
        }
        if headers["x-fixture-gzip"] == "1" {
            body = try body.compress(with: .gzip())
            fields[.contentEncoding] = "gzip"
        }
        return Response(status: .ok, headers: fields, body: ResponseBody(byteBuffer: body))
    }
}

/// Sends `raw` (a whole HTTP/1.1 request, as bytes) to the port and returns the status code:
/// for paths that an HTTP client library would normalise before sending.
func rawStatus(port: Int, _ raw: String) async throws -> Int {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
    return try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: raw))
        var text = ""
        for try await chunk in inbound {
            text += String(buffer: chunk)
            if text.contains("\r\n") { break }
        }
        let parts = text.split(separator: " ", maxSplits: 2)
        return parts.count >= 2 ? Int(parts[1]) ?? -1 : -1
    }
}
