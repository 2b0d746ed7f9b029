import AllotDemo
import AllotCore
import AllotGateway
import AsyncHTTPClient
import NIOPosix
import Logging
import AllotTransport
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import Tracing

/// The deployment file the gateway tests share (tiers, entitlements, models).
let testConfigYAML = """
lease: {ttl: 10s, refresh_interval: 1s}
tiers:
  - name: free
    templates:
      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m, burst: 5}
      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 30000, period: 1m}
    entitlements: {models: [small], routes: [chat, embeddings], max_prompt_bytes: 4096, max_tokens: 256}
  - name: pro
    templates:
      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 20000, period: 1m}
      - {name: month, scope: [consumer], unit: tokens, kind: quota, allowance: 15000, window: month, time_zone: Europe/Berlin}
      - {name: spend, scope: [team], unit: micro_dollars, kind: quota, allowance: 100000000, window: month}
      - {name: per-model, scope: [consumer, model], unit: requests, kind: rate, limit: 600, period: 1m}
      - {name: per-route, scope: [consumer, route], unit: requests, kind: rate, limit: 600, period: 1m}
  - name: agent
    templates:
      - {name: inflight, scope: [consumer], kind: concurrency, limit: 3}
      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 1000000, period: 1m}
    entitlements: {max_chain_depth: 3, runaway: {factor: 3, window: 2s, baseline: 60s, min_rate: 2, action: throttle}}
models:
  - {name: small, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 2048}
  - {name: large, input_usd_per_mtok: 2.5, output_usd_per_mtok: 10, max_output_tokens: 8192}
gateway:
  upstream_timeout: 1s
  upstream_idle_timeout: 1s
  admission_wait: 300ms
  max_body_bytes: 8192
  sidecar_tokens_sha256: [78e7fc8665f29af180d8ac764f6f37a6749840d9bee6998b868fef1e1e3349bb]
"""

/// Consumers and their keys (the file holds only hashes).
let testKeys: [(key: String, id: String, tier: String, team: String)] = [
    ("sk-free-1", "f1", "free", "hobby"), ("sk-pro-1", "p1", "pro", "search"), ("sk-pro-2", "p2", "pro", "search"),
    ("sk-agent-1", "a1", "agent", "bots"), ("sk-agent-2", "a2", "agent", "bots"),
]

func testConsumersYAML() -> String {
    "consumers:\n" + testKeys.map {
        "  - {id: \($0.id), team: \($0.team), tenant: acme, tier: \($0.tier), key_sha256: \(ConsumerDirectory.hash($0.key))}\n"
    }.joined()
}

func testConfig(yaml: String = testConfigYAML, _ edit: (inout GatewayConfig) -> Void = { _ in }) throws -> (GatewayConfig, ConsumerDirectory) {
    var c = try GatewayConfig(yaml: yaml)
    edit(&c)
    let d = try ConsumerDirectory(yaml: testConsumersYAML(), tiers: Set(c.shared.tiers.map(\.name)))
    return (c, d)
}

/// One HTTP client for every test (AsyncHTTPClient).
let testHTTP: HTTPClient = {
    var c = HTTPClient.Configuration()
    c.timeout = .init(connect: .seconds(2), read: .seconds(10))
    c.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
}()

struct Reply {
    var status: Int
    var headers: [String: String]
    var body: String
    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] }
    var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
    var errorBudget: String? { (json?["error"] as? [String: Any])?["budget"] as? String }
}

func chatBody(model: String = "small", maxTokens: Int? = 100, stream: Bool = false, prompt: String = "Say hello to the fleet.") -> String {
    var o: [String: Any] = ["model": model, "messages": [["role": "user", "content": prompt]]]
    if let maxTokens { o["max_tokens"] = maxTokens }
    if stream { o["stream"] = true }
    return String(decoding: try! JSONSerialization.data(withJSONObject: o, options: .sortedKeys), as: UTF8.self)
}

func call(port: Int, path: String = "/v1/chat/completions", method: HTTPMethod = .POST, key: String?, body: String?,
          headers extra: [(String, String)] = [], timeout: Duration = .seconds(10)) async throws -> Reply {
    var r = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    r.method = method
    if let key { r.headers.add(name: "authorization", value: "Bearer \(key)") }
    r.headers.add(name: "content-type", value: "application/json")
    for (k, v) in extra { r.headers.add(name: k, value: v) }
    if let body { r.body = .bytes(ByteBuffer(string: body)) }
    let response = try await testHTTP.execute(r, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000))
    var headers: [String: String] = [:]
    for h in response.headers { headers[h.name.lowercased()] = h.value }
    var text = ""
    do {
        for try await chunk in response.body { text += String(buffer: chunk) }
    } catch {
        text += "<<cut: \(error)>>"
    }
    return Reply(status: Int(response.status.code), headers: headers, body: text)
}

/// Every audit record the fleet's nodes wrote.
func auditRecords(_ fleet: LocalFleet) throws -> [AuditRecord] {
    var out: [AuditRecord] = []
    for i in 0..<fleet.gateways.count {
        for f in AuditLog.files(in: fleet.auditDirectory(i)) {
            for line in try Data(contentsOf: f).split(separator: UInt8(ascii: "\n")) {
                out.append(try JSONDecoder().decode(AuditRecord.self, from: Data(line)))
            }
        }
    }
    return out
}

/// Collects the gateways' events (admit, settle, deny) for checks on their own timestamps.
final class EventLog: Sendable {
    private let events = Mutex<[GatewayEvent]>([])
    var observer: GatewayEvent.Observer { { [self] e in self.events.withLock { $0.append(e) } } }
    var all: [GatewayEvent] { events.withLock { $0 } }
}

/// Runs the `allot` binary that `swift build` put in `.build` (debug, else release).
func runAllot(_ args: [String]) throws -> (status: Int32, output: String) {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let binary = ["debug", "release"].map { root.appendingPathComponent(".build/\($0)/allot") }
        .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    let p = Process()
    p.executableURL = try #require(binary, "build the allot binary first (swift build)")
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Starts a gateway beside `fleet`'s, as node `g.name` (its certificate from the fleet's CA
/// directory), reaching the fleet's coordinator port (alive, or stopped: a restart with no
/// coordinator). Returns it running, with its proxy port and the task to cancel.
func startGateway(_ g: GatewayConfig, consumers: ConsumerDirectory, beside fleet: LocalFleet, logger given: Logger? = nil,
                  tracer: (any Tracer)? = nil) async throws
    -> (service: GatewayService, port: Int, task: Task<Void, any Error>) {
    var g = g
    (g.listenPort, g.adminPort) = (0, 0)
    let name = g.name
    let tls = try TLSMaterialStore { try TLSMaterial.load(dir: fleet.directory.appendingPathComponent("certs"), role: .node, name: name) }
    let transport = TLSLeaseTransport(host: "127.0.0.1", port: fleet.coordinatorPort, tls: tls, group: MultiThreadedEventLoopGroup.singleton)
    let ports = PortBox(count: 1)
    var logger = given ?? Logger(label: "gateway-\(name)")
    if given == nil { logger.logLevel = .critical }
    let service = try GatewayService(config: g, consumers: consumers, transport: transport, logger: logger,
                                     onListening: { p, _ in ports.set(0, p) }, tracer: tracer)
    let task = Task { try await service.run() }
    return (service, try await ports.wait(0), task)
}

/// gw-1 of `fleet` started again (the fleet stopped: no coordinator answers), with its
/// directory cache (and the policy beside it), an upstream nobody serves and an audit
/// directory of its own.
func restartGateway1(_ base: GatewayConfig, consumers: ConsumerDirectory, beside fleet: LocalFleet) async throws
    -> (service: GatewayService, port: Int, task: Task<Void, any Error>) {
    var g = base
    g.name = "gw-1"
    g.directoryCache = fleet.directory.appendingPathComponent("directory-gw-1.json").path
    g.upstream = URL(string: "http://127.0.0.1:9")!
    g.auditDirectory = fleet.directory.appendingPathComponent("audit-restarted").path
    return try await startGateway(g, consumers: consumers, beside: fleet)
}
