import AllotCluster
import AllotCore
import AllotSimulator
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Step 4, must-show 1, with the real binary: three coordinator processes (a cluster over
/// mutual TLS, one SQLite ledger file), eight node processes on many budgets, and one
/// coordinator SIGKILLed mid-run.
@Suite("allot cluster as separate processes", .serialized)
struct ClusterProcessTests {
    let procs = ProcessTests()

    /// `n` distinct ports free on 127.0.0.1, below the ephemeral range (32768–60999), so no
    /// outgoing connection takes one between this check and the coordinator's bind (ports
    /// from the kernel's port 0 were taken that way, and two calls could return the same one).
    static func freePorts(_ n: Int) -> [Int] {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        var ports: [Int] = []
        var port = 20_000 + Int.random(in: 0..<10_000)
        while ports.count < n && port < 32_000 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(port).bigEndian
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if bound == 0 {
                fds.append(fd)
                ports.append(port)
            } else {
                close(fd)
            }
            port += 1
        }
        return ports
    }

    @Test("3 coordinators, 8 nodes, SIGKILL one coordinator: nodes keep admitting, re-route within 3 s, quotas exact, rates within 1%")
    func failover() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try procs.run(["certs", "init", "--dir", "certs", "--trust-domain", "allot.test"], in: dir)
        for c in 0..<3 { _ = try procs.run(["certs", "issue", "--dir", "certs", "--role", "coordinator", "--name", "c\(c)", "--ip", "127.0.0.1"], in: dir) }
        for i in 0..<8 { _ = try procs.run(["certs", "issue", "--dir", "certs", "--role", "node", "--name", "gw-\(i)"], in: dir) }
        let ports = Self.freePorts(6)
        let seeds = (0..<3).map { "127.0.0.1:\(ports[$0])" }
        var yaml = """
        cluster:
          seeds: [\(seeds.joined(separator: ", "))]
          protocol_period: 200ms
          ping_timeout: 80ms
          suspicion_timeout: 1s
          join_timeout: 1s
        ledger: sqlite:ledger.db
        tls:
          dir: certs
        lease:
          ttl: 2s
          refresh_interval: 200ms
        budgets:

        """
        for q in 0..<4 { yaml += "  - {id: q\(q), unit: requests, kind: quota, allowance: 2000, window: month}\n" }
        for r in 0..<4 { yaml += "  - {id: r\(r), unit: requests, kind: rate, limit: 250, period: 1s, burst: 250}\n" }
        try yaml.write(to: dir.appendingPathComponent("allot.yaml"), atomically: true, encoding: .utf8)

        var coordinators: [ProcessTests.Proc] = []
        for c in 0..<3 {
            coordinators.append(try procs.start(["coordinator", "--config", "allot.yaml", "--name", "c\(c)",
                                                 "--listen", seeds[c], "--admin", "127.0.0.1:\(ports[3 + c])"], in: dir))
        }
        defer { for c in coordinators where c.process.isRunning { c.process.terminate() } }
        // Ready = listening, ledger open, cluster view formed.
        func ready(_ c: Int) async -> Bool {
            guard let (data, _) = try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(ports[3 + c])/readyz")!) else { return false }
            return String(decoding: data, as: UTF8.self) == "ready\n"
        }
        func allReady() async -> Bool {
            for c in 0..<3 where !(await ready(c)) { return false }
            return true
        }
        for _ in 0..<100 where !(await allReady()) { try await Task.sleep(for: .milliseconds(100)) }
        #expect(await allReady(), "the cluster did not form")
        try await Task.sleep(for: .seconds(2)) // one lease TTL: the formation's learning time

        // 12 s of load: the quotas the victim owned pause ~1.1–1.8 s (detection, then the new
        // owner grants what their ledger rows leave free at once; ~3.4 s when it learned for a
        // lease TTL first) and need ~2.5 s more to be used up; at 9 s a CPU-starved run ended
        // with up to 700 of them free in the new owner's pool (used 1281/2000, nothing lost).
        var nodes: [ProcessTests.Proc] = []
        for i in 0..<8 {
            nodes.append(try procs.start(["node-load", "--config", "allot.yaml", "--coordinator", seeds.joined(separator: ","),
                                          "--tls-dir", "certs", "--name", "gw-\(i)", "--rate", "400", "--seconds", "12", "--each",
                                          "--trace", "trace-\(i).txt"], in: dir))
        }
        try await Task.sleep(for: .seconds(3))
        // SIGKILL the coordinator that owns q0 (and whatever else rendezvous gave it).
        let members = (0..<3).map { MemberID(name: "c\($0)", address: seeds[$0]) }
        let victim = members.firstIndex(of: Rendezvous.owner(of: "q0", among: members)!)!
        kill(coordinators[victim].process.processIdentifier, SIGKILL)
        coordinators[victim].process.waitUntilExit()

        var reports: [[String: Any]] = []
        for n in nodes {
            n.process.waitUntilExit()
            let text = n.readAll() + String(decoding: n.out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            if let l = text.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
               let obj = try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any] { reports.append(obj) }
        }
        #expect(reports.count == 8)
        let longest = reports.compactMap { $0["longest_answer_ms"] as? Int }.max() ?? 0
        var times: [String: [Int64]] = [:]
        for i in 0..<8 {
            let text = (try? String(contentsOf: dir.appendingPathComponent("trace-\(i).txt"), encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let p = line.split(separator: " ")
                if p.count == 2, let t = Int64(p[1]) { times[String(p[0]), default: []].append(t) }
            }
        }
        var summary: [String] = []
        for q in 0..<4 {
            let total = times["q\(q)"]?.count ?? 0
            summary.append("q\(q) \(total)/2000")
            #expect(total <= 2000, "q\(q): \(total) admitted of 2000")
            #expect(total >= 1800, "q\(q): only \(total) of 2000 used")
        }
        for r in 0..<4 {
            let spec = try BudgetSpec(id: BudgetID("r\(r)"), unit: .requests, kind: .rate(limit: 250, period: .seconds(1), burst: 250))
            let all = times["r\(r)"] ?? []
            guard !all.isEmpty else {
                Issue.record("r\(r): nothing admitted")
                continue
            }
            let checker = BudgetChecker.replay(times: all, spec: spec)
            summary.append("r\(r) \(all.count) excess \(checker.excess)")
            #expect(Double(checker.excess) <= 0.01 * 250, "r\(r): \(checker.excess) over the bucket")
        }
        // The longest time without an admission on each quota the victim owned, fleet-wide (wall
        // clock across the node processes): detection plus what the new owner waits. Printed for
        // docs/performance.md, not asserted (timing on a 2-core machine).
        for q in 0..<4 where Rendezvous.owner(of: BudgetID("q\(q)"), among: members) == members[victim] {
            let sorted = (times["q\(q)"] ?? []).sorted()
            let gap = zip(sorted.dropFirst(), sorted).map { $0 - $1 }.max() ?? 0
            summary.append("q\(q) (the victim's) longest pause \(gap / 1_000_000) ms")
        }
        print("cluster failover (processes): longest acquire answer \(longest) ms; \(summary.joined(separator: ", "))")
        #expect(longest <= 3000, "re-routing took \(longest) ms")
        for c in 0..<3 where c != victim {
            coordinators[c].process.terminate()
            coordinators[c].process.waitUntilExit()
            #expect(coordinators[c].process.terminationStatus == 0)
        }
    }
}
