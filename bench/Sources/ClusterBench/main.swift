// Step 4 on this machine: grants per second with 1, 2 and 3 coordinators (a cluster over
// mutual TLS, nodes sending each budget to its owner), failure detection time, and the
// ledger's group-commit rate on SQLite (and PostgreSQL when ALLOT_BENCH_POSTGRES is set).
// Run: cd bench && swift run -c release ClusterBench
import AllotCluster
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
func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-cbench-\(UUID().uuidString)")
let ca = try CertificateAuthority.create(in: dir, trustDomain: "bench")
for c in 0..<3 { try ca.issue(role: .coordinator, name: "c\(c)") }
for i in 0..<4 { try ca.issue(role: .node, name: "n\(i)") }
defer { try? FileManager.default.removeItem(at: dir) }
let group = MultiThreadedEventLoopGroup.singleton
let budgets = (0..<3000).map { try! BudgetSpec(id: BudgetID("b\($0)"), unit: .requests, kind: .rate(limit: 1 << 40, period: .seconds(1), burst: 1 << 40)) }

struct Running {
    var servers: [CoordinatorServer]
    var clusters: [ClusterService]
    var addresses: [MemberID]
}

/// N coordinators on fixed loopback ports, formed into one cluster.
func startCluster(_ n: Int, base: Int, membership: Membership.Settings) async throws -> Running {
    let seeds = (0..<n).map { "127.0.0.1:\(base + $0)" }
    var servers: [CoordinatorServer] = [], clusters: [ClusterService] = [], members: [MemberID] = []
    for c in 0..<n {
        var s = CoordinatorCore.Settings()
        s.name = "c\(c)"
        s.member = MemberID(name: "c\(c)", address: seeds[c])
        s.session.itemsPerSecond = 100_000_000
        s.allocator.leaseTTL = .milliseconds(500)
        s.allocator.refreshInterval = .milliseconds(100)
        let core = try CoordinatorCore(settings: s, budgets: budgets, now: WallClock.now())
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .coordinator, name: "c\(c)") }
        let server = CoordinatorServer(core: core, tls: tls, group: group, logger: quiet())
        _ = try await server.start(host: "127.0.0.1", port: base + c)
        var cs = ClusterService.Settings()
        cs.seeds = seeds
        cs.membership = membership
        cs.joinTimeout = .seconds(1)
        let cluster = ClusterService(core: core, settings: cs, logger: quiet(), now: WallClock.now(),
                                     dial: TLSLeaseTransport.dialer(tls: tls, group: group))
        cluster.start(on: group.next())
        servers.append(server)
        clusters.append(cluster)
        members.append(s.member!)
    }
    let deadline = ContinuousClock.now + .seconds(10)
    while clusters.contains(where: { $0.live.count != n }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
    return Running(servers: servers, clusters: clusters, addresses: members)
}

func stop(_ r: Running) async {
    for c in r.clusters { c.stop() }
    for s in r.servers { try? await s.shutdown() }
}

// 1. Grants per second with 1, 2 and 3 coordinators.
var fast = Membership.Settings()
fast.protocolPeriod = .milliseconds(200)
fast.pingTimeout = .milliseconds(80)
fast.suspicionTimeout = .seconds(1)
for n in 1...3 {
    let r = try await startCluster(n, base: 27_100 + 10 * n, membership: fast)
    try await Task.sleep(for: .seconds(1)) // past the formation's learning time
    let granted = Counter()
    var conns: [[any LeaseConnection]] = [] // [node][coordinator]
    for i in 0..<4 {
        var row: [any LeaseConnection] = []
        for m in r.addresses {
            let port = Int(m.address.split(separator: ":").last!)!
            let t = TLSLeaseTransport(host: "127.0.0.1", port: port, tls: try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: "n\(i)") }, group: group)
            let c = try await t.connect(onFrame: { f in
                if case .grants(let b) = f.body { granted.add(b.items.filter { $0.outcome == .granted }.count) }
            }, onClose: {})
            c.send([.hello(name: "n\(i)")])
            row.append(c)
        }
        conns.append(row)
    }
    // Each budget goes to its owner.
    let owner = budgets.map { b in r.addresses.firstIndex(of: Rendezvous.owner(of: b.id, among: r.addresses)!)! }
    var requestID = [UInt64](repeating: 0, count: 4)
    var sent = 0
    var cursor = 0
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .seconds(4) {
        for i in 0..<4 {
            guard sent - granted.value < 4 * 20 * 500 else { continue }
            var perOwner = [[AcquireRequest]](repeating: [], count: n)
            for _ in 0..<500 {
                requestID[i] += 1
                let b = cursor % budgets.count
                cursor += 7
                perOwner[owner[b]].append(AcquireRequest(requestID: requestID[i], node: "x", budget: budgets[b].id, want: 10))
            }
            for (c, items) in perOwner.enumerated() where !items.isEmpty { conns[i][c].send([.acquire(items)]) }
            sent += 500
        }
        try await Task.sleep(for: .microseconds(200))
    }
    let elapsed = seconds(ContinuousClock.now - start)
    print(String(format: "grants over mTLS with %d coordinator%@: %.0f grants/s (4 nodes, 500 acquires per round, each budget to its owner)",
                 n, n == 1 ? "" : "s", Double(granted.value) / elapsed))
    for row in conns { for c in row { c.close() } }
    await stop(r)
}

// 2. Failure detection: 3 coordinators, one stops answering; time until both others drop it.
for (label, settings) in [("period 200 ms, suspicion 1 s", fast), ("defaults: period 1 s, suspicion 3 s", Membership.Settings())] {
    var times: [Double] = []
    for trial in 0..<3 {
        let r = try await startCluster(3, base: 27_200 + 10 * trial + (label.hasPrefix("defaults") ? 50 : 0), membership: settings)
        let t0 = ContinuousClock.now
        r.clusters[2].stop()
        r.servers[2].core.abort()
        try? await r.servers[2].shutdown()
        while r.clusters[0..<2].contains(where: { $0.live.count != 2 }) && ContinuousClock.now - t0 < .seconds(20) {
            try await Task.sleep(for: .milliseconds(10))
        }
        times.append(seconds(ContinuousClock.now - t0))
        await stop(Running(servers: Array(r.servers[0..<2]), clusters: Array(r.clusters[0..<2]), addresses: []))
    }
    print(String(format: "failure detection (%@): %@ s (3 trials)", label, times.map { String(format: "%.2f", $0) }.joined(separator: ", ")))
}

// 3. Ledger group commit: 8 writers submitting single-row grants as fast as answers come back.
func ledgerBench(_ name: String, _ store: any LedgerStore) async throws {
    try await store.migrate()
    let writer = LedgerWriter(store: store, logger: quiet())
    let done = Counter()
    let start = ContinuousClock.now
    let window = (Instant(seconds: 1), Instant(seconds: 2))
    await withTaskGroup(of: Void.self) { g in
        for w in 0..<8 {
            g.addTask {
                var k = 0
                while ContinuousClock.now - start < .seconds(3) {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        let change = LedgerChange(budget: BudgetID("bench-\(w)-\(k % 50)"), windowStart: window.0, windowEnd: window.1,
                                                  allowance: 1 << 50, delta: LedgerCounters(granted: 1))
                        writer.submit([change]) { _ in c.resume() }
                    }
                    done.add(1)
                    k += 1
                }
            }
        }
    }
    let elapsed = seconds(ContinuousClock.now - start)
    let st = writer.stats
    print(String(format: "ledger %@: %.0f durable grant records/s in %.0f commits/s (%.1f records per commit, 8 concurrent writers)",
                 name, Double(done.value) / elapsed, Double(st.commits) / elapsed, Double(done.value) / Double(max(1, st.commits))))
    await store.close()
}
try await ledgerBench("SQLite (WAL, synchronous=FULL)", try SQLiteLedger.open(path: dir.appendingPathComponent("bench.db").path))
if let url = ProcessInfo.processInfo.environment["ALLOT_BENCH_POSTGRES"],
   case .postgres(let h, let p, let u, let pw, let db) = try LedgerLocation(parsing: url) {
    try await ledgerBench("PostgreSQL", PostgresLedger(host: h, port: p, user: u, password: pw, database: db, logger: quiet()))
} else {
    print("ledger PostgreSQL: skipped (set ALLOT_BENCH_POSTGRES=postgres://USER@HOST:PORT/DB)")
}
