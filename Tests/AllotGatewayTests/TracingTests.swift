import AllotDemo
@testable import AllotGateway
import AllotTelemetry
import AllotTransport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing
import Tracing

/// `--otlp-endpoint`: a traced request's spans, exported by swift-otel over OTLP/HTTP to a
/// collector stand-in this test runs; and swift-metrics bootstrapped onto a gateway's registry.
@Suite("Tracing (OTLP) and library metrics", .serialized)
struct TracingTests {
    /// An OTLP/HTTP collector stand-in: keeps every span it is sent (`http/json`).
    final class Collector: Sendable {
        struct Span: Sendable {
            var name: String, traceID: String, spanID: String, parentID: String, kind: Int
            var attributes: [String: String]
        }
        private let spans = Mutex<[Span]>([])
        var received: [Span] { spans.withLock { $0 } }

        func start() async throws -> (port: Int, task: Task<Void, any Error>) {
            let port = AsyncStream.makeStream(of: Int.self)
            let app = Application(
                responder: CallbackResponder<BasicRequestContext> { [self] request, _ in
                    guard request.method == .post, request.uri.path == "/v1/traces" else { return Response(status: .notFound) }
                    let body = try await request.body.collect(upTo: 16 << 20)
                    if let o = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] {
                        spans.withLock { $0 += Self.spans(o) }
                    }
                    return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}")))
                },
                configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { port.continuation.yield($0.localAddress?.port ?? 0) },
                logger: Logger(label: "otlp-collector", factory: { _ in SwiftLogNoOpLogHandler() }))
            let task = Task { try await app.runService() }
            for await p in port.stream { return (p, task) }
            throw CancellationError()
        }

        /// The spans of an `ExportTraceServiceRequest` in OTLP's JSON form (ids as the
        /// exporter writes them: hex, or protobuf JSON's base64).
        static func spans(_ o: [String: Any]) -> [Span] {
            func hex(_ v: Any?) -> String {
                guard let s = v as? String, !s.isEmpty else { return "" }
                if s.count == 32 || s.count == 16, s.allSatisfy(\.isHexDigit) { return s.lowercased() }
                return Data(base64Encoded: s).map { $0.map { String(format: "%02x", $0) }.joined() } ?? s
            }
            var out: [Span] = []
            for rs in o["resourceSpans"] as? [[String: Any]] ?? [] {
                for ss in rs["scopeSpans"] as? [[String: Any]] ?? [] {
                    for s in ss["spans"] as? [[String: Any]] ?? [] {
                        var attributes: [String: String] = [:]
                        for a in s["attributes"] as? [[String: Any]] ?? [] {
                            guard let k = a["key"] as? String, let v = a["value"] as? [String: Any], let value = v.values.first else { continue }
                            attributes[k] = "\(value)"
                        }
                        out.append(Span(name: s["name"] as? String ?? "", traceID: hex(s["traceId"]), spanID: hex(s["spanId"]),
                                        parentID: hex(s["parentSpanId"]), kind: s["kind"] as? Int ?? 0, attributes: attributes))
                    }
                }
            }
            return out
        }
    }

    @Test("real time: a traced request's spans (request → reserve, upstream call, settle) reach a local OTLP collector, continue the caller's traceparent, and the upstream gets the call span's; the coordinator's acquires are spans too")
    func spansExported() async throws {
        let collector = Collector()
        let (collectorPort, collectorTask) = try await collector.start()
        let endpoint = "http://127.0.0.1:\(collectorPort)"
        // swift-otel's diagnostics, kept: a tracer that could not read a carrier logs it.
        let diagnostics = Mutex<[String]>([])
        let diagnosticLogger = Logger(label: "otel") { _ in CapturingLogHandler(record: { l in diagnostics.withLock { $0.append(l) } }) }
        let gatewayTracing = try Telemetry.otlpTracer(endpoint: endpoint, serviceName: "allot-gateway", json: true, exportEvery: .milliseconds(100),
                                                      logger: diagnosticLogger)
        let coordinatorTracing = try Telemetry.otlpTracer(endpoint: endpoint, serviceName: "allot-coordinator", json: true, exportEvery: .milliseconds(100))
        let exporters = ServiceGroup(services: [gatewayTracing.service, coordinatorTracing.service], gracefulShutdownSignals: [],
                                     logger: Logger(label: "otel", factory: { _ in SwiftLogNoOpLogHandler() }))
        let exporting = Task { try await exporters.run() }

        setenv(FixtureTests.keyEnv, "sk-operator-key", 1)
        let upstream = FixtureUpstream()
        let upstreamPort = try await upstream.start()
        let (base, consumers) = try testConfig { c in
            c.upstream = URL(string: "http://127.0.0.1:\(upstreamPort)")!
            c.upstreamKeyEnv = FixtureTests.keyEnv
        }
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 1, mock: nil, coordinatorTracer: coordinatorTracing.tracer)
        var g = base
        g.name = "gw-traced"
        g.auditDirectory = nil
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .node, name: "gw-traced")
        let (_, port, task) = try await startGateway(g, consumers: consumers, beside: fleet, tracer: gatewayTracing.tracer)

        let traceID = "4bf92f3577b34da6a3ce929d0e0e4736", callerSpan = "00f067aa0ba902b7"
        let body = FixtureTests.json(["model": "large", "max_tokens": 20, "messages": FixtureTests.user])
        let served = try await call(port: port, key: "sk-pro-1", body: body,
                                    headers: [("x-fixture", "chat_n4.json"), ("traceparent", "00-\(traceID)-\(callerSpan)-01")])
        #expect(served.status == 200, "\(served.body)")
        // A malformed traceparent (upper-case hex) beside the caller's key: not read, the
        // request's span starts a trace of its own, and nothing logs the caller's headers.
        let bad = try await call(port: port, key: "sk-pro-1", body: body,
                                 headers: [("x-fixture", "chat_n4.json"), ("x-request-id", "req-bad"), ("traceparent", "00-\(traceID.uppercased())-\(callerSpan)-01")])
        #expect(bad.status == 200)
        let names: Set<String> = ["gateway.request", "allot.reserve", "upstream.call", "allot.settle"]
        var mine: [Collector.Span] = []
        let deadline = ContinuousClock.now + .seconds(10)
        func acquired() -> Bool { collector.received.contains { $0.name == "coordinator.acquire" && $0.attributes["allot.node"] == "gw-traced" } }
        func badRoot() -> Collector.Span? { collector.received.first { $0.name == "gateway.request" && $0.attributes["allot.request_id"] == "req-bad" } }
        while ContinuousClock.now < deadline {
            mine = collector.received.filter { $0.traceID == traceID }
            if Set(mine.map(\.name)).isSuperset(of: names), acquired(), badRoot() != nil { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        task.cancel()
        _ = await task.result
        await fleet.stop()
        upstream.stop()
        await exporters.triggerGracefulShutdown()
        _ = await exporting.result
        collectorTask.cancel()

        let byName = Dictionary(mine.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(mine.map(\.name).sorted() == names.sorted(), "one span of each: \(mine.map(\.name))")
        let other = try #require(badRoot())
        #expect(other.parentID.isEmpty && other.traceID != traceID)
        // Upstream, the malformed header was replaced by the gateway's own.
        #expect(upstream.received.count == 2 && upstream.received[1].headers["traceparent"]?.hasPrefix("00-\(other.traceID)-") == true)
        #expect(diagnostics.withLock { $0 }.allSatisfy { !$0.contains("sk-pro-1") }, "\(diagnostics.withLock { $0 })")
        let root = try #require(byName["gateway.request"])
        #expect(root.parentID == callerSpan && root.kind == 2, "a server span under the caller's")
        #expect(root.attributes["http.response.status_code"] == "200" && root.attributes["url.path"] == "/v1/chat/completions")
        for child in ["allot.reserve", "upstream.call", "allot.settle"] {
            #expect(byName[child]?.parentID == root.spanID, "\(child) is a child of the request's span")
        }
        #expect(byName["allot.reserve"]?.attributes["allot.decision"] == "admit")
        #expect(byName["allot.settle"]?.attributes["allot.outcome"] == "usage")
        let call = try #require(byName["upstream.call"])
        #expect(call.kind == 3 && call.attributes["http.response.status_code"] == "200")
        // The upstream continues the trace under the call's span, not under the caller's.
        let sent = upstream.received.first?.headers["traceparent"]
        #expect(sent == "00-\(traceID)-\(call.spanID)-01", "\(sent ?? "none")")
        let acquire = collector.received.first { $0.name == "coordinator.acquire" && $0.attributes["allot.node"] == "gw-traced" }
        #expect(acquire != nil && acquire!.kind == 2 && Int(acquire!.attributes["allot.items"] ?? "") ?? 0 >= 1,
                "\(collector.received.filter { $0.name == "coordinator.acquire" })")
    }

    @Test("real time: swift-metrics is bootstrapped onto the gateway's registry: Hummingbird's request metrics are scraped beside Allot's, labelled by route, never by the raw path")
    func libraryMetrics() async throws {
        let (base, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 1)
        var g = base
        g.name = "gw-metrics"
        g.upstream = URL(string: "http://127.0.0.1:\(try #require(fleet.mockPort))")!
        g.auditDirectory = nil
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .node, name: "gw-metrics")
        let (service, port, task) = try await startGateway(g, consumers: consumers, beside: fleet)
        // One bootstrap per process: this test's gateway is the only one that asks for it.
        #expect(Telemetry.bootstrapMetrics(into: service.core.metrics.registry))
        #expect(Telemetry.bootstrapMetrics(into: service.core.metrics.registry), "the same registry again: a no-op")
        #expect(!Telemetry.bootstrapMetrics(into: GatewayMetrics().registry), "another registry: refused, nothing changed")
        let junk = "zz\(UUID().uuidString.prefix(8).lowercased())"
        #expect(try await call(port: port, key: "sk-pro-1", body: chatBody(maxTokens: 20)).status == 200)
        #expect(try await call(port: port, path: "/v1/\(junk)", key: "sk-pro-1", body: "{}").status == 404)
        task.cancel()
        _ = await task.result
        await fleet.stop()
        // What the admin listener's /metrics serves.
        let text = service.core.metrics.render()
        #expect(text.contains("allot_gateway_admission_seconds_bucket{"), "Allot's own metrics in the same scrape")
        let requests = text.split(separator: "\n").filter { $0.hasPrefix("hb_requests{") }
        #expect(requests.contains { $0.contains(#"http_route="chat""#) && $0.contains(#"http_response_status_code="200""#) }, "\(requests)")
        #expect(requests.contains { $0.contains(#"http_route="other""#) && $0.contains(#"http_response_status_code="404""#) }, "\(requests)")
        #expect(text.contains("http_server_request_duration_bucket{"), "the request duration histogram")
        #expect(!text.contains(junk), "a raw path never becomes a label")
    }

    @Test("what the tracer may read of a request: one well-formed traceparent and its tracestate, never anything else")
    func propagated() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        var h = HTTPFields()
        h[.authorization] = "Bearer sk-secret"
        h[HTTPField.Name("x-api-key")!] = "sk-secret"
        #expect(RequestTrace.propagated(h).isEmpty)
        h[.traceparent] = good
        h[.tracestate] = "vendor=1"
        #expect(RequestTrace.propagated(h) == [.traceparent: good, .tracestate: "vendor=1"])
        h.append(HTTPField(name: .traceparent, value: good))
        #expect(RequestTrace.propagated(h).isEmpty, "two traceparents: neither")
        var upper = HTTPFields()
        upper[.traceparent] = good.uppercased()
        #expect(RequestTrace.propagated(upper).isEmpty)
    }

    @Test("the OTLP endpoint must be an http(s) URL")
    func badEndpoint() {
        #expect(throws: TelemetryError.self) { try Telemetry.otlpTracer(endpoint: "127.0.0.1:4318", serviceName: "x") }
    }
}

/// Keeps every line logged, with its metadata, for tests.
struct CapturingLogHandler: LogHandler {
    let record: @Sendable (String) -> Void
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        let all = self.metadata.merging(metadata ?? [:]) { $1 }
        record("\(level) \(message) \(all)")
    }
}
