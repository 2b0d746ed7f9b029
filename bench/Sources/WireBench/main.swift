// Measures the lease protocol on this machine: grants per second over mutual TLS (batched),
// TLS handshake + hello cost, and the node's admit cost while its lease client runs.
// Run: cd bench && swift run -c release WireBench
import AllotCoordinator
import AllotCore
import AllotNode
import AllotTransport
import AllotWire
import Foundation
import Logging
import NIOPosix
import Synchronization

final class Counter: Sendable {
    let n = Mutex(0)
    func add(_ k: Int) { n.withLock { $0 += k } }
    var value: Int { n.withLock { $0 } }
}

func quiet() -> Logger { var l = Logger(label: "bench"); l.logLevel = .critical; return l }

let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-bench-\(UUID().uuidString)")
let ca = try CertificateAuthority.create(in: dir, trustDomain: "bench")
try ca.issue(role: .coordinator, name: "c1")
for i in 0..<4 { try ca.issue(role: .node, name: "n\(i)") }
defer { try? FileManager.default.removeItem(at: dir) }
let group = MultiThreadedEventLoopGroup.singleton

// 0. The coordinator core alone (no network): the same batches, called directly.
let budgets = (0..<2000).map { try! BudgetSpec(id: BudgetID("b\($0)"), unit: .requests, kind: .quota(allowance: 1 << 40, window: try! CalendarWindow(.day))) }
do {
    let core0 = try CoordinatorCore(settings: .init(), budgets: budgets, now: WallClock.now())
    var id: UInt64 = 0
    let t0 = ContinuousClock.now
    var n = 0
    while ContinuousClock.now - t0 < .seconds(2) {
        var items: [Allot_V1_Acquire] = []
        for k in 0..<500 {
            id += 1
            items.append(AcquireRequest(requestID: id, node: "x", budget: BudgetID("b\((Int(id) * 7 + k) % 2000)"), want: 10).wire)
        }
        _ = core0.acquire(items, from: NodeID("n\(id % 4)"), now: WallClock.now())
        n += 500
    }
    print("coordinator core alone: \(n / 2) grants/s")
}

// 1. Grants per second: 4 connections, frames of 500 acquires on 2,000 budgets.
var benchSettings = CoordinatorCore.Settings()
benchSettings.session.itemsPerSecond = 100_000_000 // measure throughput, not the flood bound
let core = try CoordinatorCore(settings: benchSettings, budgets: budgets, now: WallClock.now())
let server = CoordinatorServer(core: core, tls: try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .coordinator, name: "c1") }, group: group, logger: quiet())
let port = try await server.start(host: "127.0.0.1", port: 0).port!
let granted = Counter()
let seconds = 5.0
var connections: [any LeaseConnection] = []
for i in 0..<4 {
    let t = TLSLeaseTransport(host: "127.0.0.1", port: port, tls: try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: "n\(i)") }, group: group)
    let c = try await t.connect(onFrame: { f in if case .grants(let b) = f.body { granted.add(b.items.count) } }, onClose: {})
    c.send([.hello(name: "n\(i)")])
    connections.append(c)
}
var requestID: [UInt64] = [0, 0, 0, 0]
let start = ContinuousClock.now
var sent = 0
while ContinuousClock.now - start < .seconds(seconds) {
    for (i, c) in connections.enumerated() {
        // Keep at most ~20 frames in flight per connection.
        guard sent - granted.value < 4 * 20 * 500 else { continue }
        var items: [AcquireRequest] = []
        for k in 0..<500 {
            requestID[i] += 1
            items.append(AcquireRequest(requestID: requestID[i], node: "x", budget: BudgetID("b\((Int(requestID[i]) * 7 + k) % 2000)"), want: 10))
        }
        c.send([.acquire(items)])
        sent += 500
    }
    try await Task.sleep(for: .microseconds(200))
}
let elapsed = Double((ContinuousClock.now - start).components.seconds) + Double((ContinuousClock.now - start).components.attoseconds) / 1e18
print(String(format: "grants over mTLS: %.0f grants/s (%d in %.1f s, 4 connections, 500 acquires per frame)", Double(granted.value) / elapsed, granted.value, elapsed))
for c in connections { c.close() }

// 2. Handshake + hello cost, sequential.
let handshakes = 200
let hsStart = ContinuousClock.now
for i in 0..<handshakes {
    let acked = Counter()
    let t = TLSLeaseTransport(host: "127.0.0.1", port: port, tls: try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: "n\(i % 4)") }, group: group)
    let c = try await t.connect(onFrame: { f in if case .helloAck = f.body { acked.add(1) } }, onClose: {})
    c.send([.hello(name: "n")])
    while acked.value == 0 { try await Task.sleep(for: .microseconds(100)) }
    c.close()
}
let hs = ContinuousClock.now - hsStart
print(String(format: "TLS 1.3 handshake + hello + ack: %.2f ms each (%d sequential, certificates loaded each time)",
             Double(hs.components.attoseconds / 1_000_000_000_000 + hs.components.seconds * 1_000_000) / 1000 / Double(handshakes), handshakes))

// 3. Admit cost while the lease client runs (in-process coordinator), vs without.
let budget = try BudgetSpec(id: "r", unit: .requests, kind: .rate(limit: 1 << 40, period: .seconds(1), burst: 1 << 50))
let core2 = try CoordinatorCore(settings: .init(), budgets: [budget], now: WallClock.now())
let enforcer = try SharedEnforcer(settings: EnforcerSettings(node: "n0"))
let set = BudgetSet(enforcer.register(budget))
let client = LeaseClient(enforcer: enforcer, transport: InProcessTransport(core: core2, identity: try PeerIdentity(trustDomain: "bench", role: .node, name: "n0")), logger: quiet())
let runner = Task { await client.run() }
while !enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted { try await Task.sleep(for: .milliseconds(5)) }
let n = 5_000_000
var ok = 0
let aStart = ContinuousClock.now
for _ in 0..<n { if enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted { ok += 1 } }
let a = ContinuousClock.now - aStart
print(String(format: "admit with the lease client running: %.0f ns each (%d of %d admitted, clock read included)",
             Double(a.components.attoseconds / 1_000_000_000 + a.components.seconds * 1_000_000_000) / Double(n), ok, n))
runner.cancel()
await runner.value
try await server.shutdown()
