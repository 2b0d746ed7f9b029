import AllotCoordinator
import AllotCore
import AllotTransport
import AllotWire
import ArgumentParser
import Foundation
import Logging
import NIOPosix
import Synchronization

/// `allot bench-scale`: how one coordinator's grant throughput and memory grow with the
/// number of budgets it holds (`--budgets N`, acquires spread over all of them, no network)
/// or with node connections (`--connections N` over mutual TLS on loopback, 2,000 budgets).
/// One measurement per process, so resident memory is this size's alone. Prints one JSON line.
struct BenchScale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Grant throughput and memory of one coordinator at a number of budgets or node connections (bench/run.sh).")

    @Option(help: "Budgets on the coordinator (no network).") var budgets: Int?
    @Option(help: "Node connections over mutual TLS (2,000 budgets).") var connections: Int?
    @Option(help: "Seconds to measure.") var seconds = 3.0

    func validate() throws {
        guard (budgets == nil) != (connections == nil) else { throw ValidationError("give exactly one of --budgets and --connections") }
        if let budgets, !(1...10_000_000).contains(budgets) { throw ValidationError("--budgets must be 1…10,000,000") }
        if let connections, !(1...1024).contains(connections) { throw ValidationError("--connections must be 1…1,024") }
    }

    static func residentMB() -> Double {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = s.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return pages * 4096 / 1_048_576
    }

    static func specs(_ n: Int) -> [BudgetSpec] {
        let window = try! CalendarWindow(.day)
        return (0..<n).map { try! BudgetSpec(id: BudgetID("b\($0)"), unit: .requests, kind: .quota(allowance: 1 << 40, window: window)) }
    }

    func run() async throws {
        let before = Self.residentMB()
        var result: [String: Any] = ["seconds": seconds]
        if let budgets {
            let t0 = ContinuousClock.now
            let core = try CoordinatorCore(settings: .init(), budgets: Self.specs(budgets), now: WallClock.now())
            let setup = ContinuousClock.now - t0
            // 16 nodes, frames of 500 acquires spread over every budget (each touched in turn).
            var id: UInt64 = 0, n = 0
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .milliseconds(Int64(seconds * 1000)) {
                var items: [Allot_V1_Acquire] = []
                items.reserveCapacity(500)
                for _ in 0..<500 {
                    id += 1
                    items.append(AcquireRequest(requestID: id, node: "x", budget: BudgetID("b\(Int(id &* 7_919) % budgets)"), want: 10).wire)
                }
                _ = core.acquire(items, from: NodeID("n\(id % 16)"), now: WallClock.now())
                n += 500
            }
            let elapsed = (ContinuousClock.now - start) / .seconds(1)
            // The periodic tick (expiries, windows, learning) visits every budget.
            let tickStart = ContinuousClock.now
            for _ in 0..<5 { core.tick(now: WallClock.now()) }
            result["tick_ms"] = (ContinuousClock.now - tickStart) / .milliseconds(1) / 5
            result["kind"] = "budgets"
            result["count"] = budgets
            result["grants_per_second"] = Double(n) / elapsed
            result["setup_seconds"] = setup / .seconds(1)
            result["rss_mb"] = Self.residentMB() - before
            result["bytes_per_budget"] = (Self.residentMB() - before) * 1_048_576 / Double(budgets)
        } else if let connections {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-scale-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            let ca = try CertificateAuthority.create(in: dir, trustDomain: "bench")
            try ca.issue(role: .coordinator, name: "c1")
            for i in 0..<connections { try ca.issue(role: .node, name: "n\(i)") }
            var settings = CoordinatorCore.Settings()
            settings.session.itemsPerSecond = 100_000_000 // throughput, not the flood bound
            let core = try CoordinatorCore(settings: settings, budgets: Self.specs(2_000), now: WallClock.now())
            let group = MultiThreadedEventLoopGroup.singleton
            var logger = Logger(label: "bench")
            logger.logLevel = .critical
            let server = CoordinatorServer(core: core, tls: try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .coordinator, name: "c1") },
                                           group: group, logger: logger)
            let port = try await server.start(host: "127.0.0.1", port: 0).port!
            let granted = Mutex(0)
            var conns: [any LeaseConnection] = []
            for i in 0..<connections {
                // Each node its own certificate: the coordinator keeps books per node.
                let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: "n\(i)") }
                let t = TLSLeaseTransport(host: "127.0.0.1", port: port, tls: tls, group: group)
                let c = try await t.connect(onFrame: { f in
                    if case .grants(let b) = f.body { granted.withLock { $0 += b.items.filter { $0.outcome == .granted }.count } }
                }, onClose: {})
                c.send([.hello(name: "n\(i)")])
                conns.append(c)
            }
            let afterConnect = Self.residentMB()
            var ids = [UInt64](repeating: 0, count: connections)
            var sent = 0
            let start = ContinuousClock.now
            while ContinuousClock.now - start < .milliseconds(Int64(seconds * 1000)) {
                for (i, c) in conns.enumerated() {
                    // At most ~8 frames of 100 in flight per connection.
                    guard sent - granted.withLock({ $0 }) < connections * 8 * 100 else { break }
                    var items: [AcquireRequest] = []
                    for k in 0..<100 {
                        ids[i] += 1
                        items.append(AcquireRequest(requestID: ids[i], node: "x",
                                                    budget: BudgetID("b\((Int(ids[i]) * 7 + k + i * 13) % 2_000)"), want: 10))
                    }
                    c.send([.acquire(items)])
                    sent += 100
                }
                try await Task.sleep(for: .microseconds(200))
            }
            let elapsed = (ContinuousClock.now - start) / .seconds(1)
            result["kind"] = "connections"
            result["count"] = connections
            result["grants_per_second"] = Double(granted.withLock { $0 }) / elapsed
            result["rss_mb"] = afterConnect - before
            for c in conns { c.close() }
            try await server.shutdown()
        }
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}
