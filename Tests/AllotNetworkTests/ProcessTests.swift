import Foundation
import Testing

/// Step 2, must-show 2 and 3: the real `allot` binary as separate processes — certificates,
/// a coordinator, node processes — checked from the outside with `allot status`.
@Suite("allot as separate processes", .serialized)
struct ProcessTests {
    static var binary: URL? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let url = root.appendingPathComponent(".build/debug/allot")
        return FileManager.default.isExecutableFile(atPath: url.path) ? url : nil
    }

    final class Proc: @unchecked Sendable { // only touched from the test's task
        let process = Process()
        let out = Pipe()
        var text = ""
        func readAll() -> String {
            text += String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
            return text
        }
    }

    func start(_ args: [String], in dir: URL) throws -> Proc {
        let p = Proc()
        p.process.executableURL = try #require(Self.binary, "build the allot binary first")
        p.process.arguments = args
        p.process.currentDirectoryURL = dir
        p.process.standardOutput = p.out
        // ALLOT_TEST_LOGS=DIR keeps every process's standard error there (debugging a rig).
        if let logs = ProcessInfo.processInfo.environment["ALLOT_TEST_LOGS"] {
            let file = logs + "/" + args.prefix(5).joined(separator: "_").replacingOccurrences(of: "/", with: "_") + ".log"
            FileManager.default.createFile(atPath: file, contents: nil)
            p.process.standardError = FileHandle(forWritingAtPath: file)
        } else {
            p.process.standardError = FileHandle.nullDevice
        }
        try p.process.run()
        return p
    }

    func run(_ args: [String], in dir: URL) throws -> String {
        let p = try start(args, in: dir)
        // Read first: output larger than the pipe's buffer would block the child before it exits.
        let s = String(decoding: p.out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.process.waitUntilExit()
        #expect(p.process.terminationStatus == 0, "allot \(args.joined(separator: " ")) failed: \(s)")
        return s
    }

    func status(_ port: Int, in dir: URL) throws -> [String: [String: Int64]] {
        let json = try run(["status", "--coordinator", "127.0.0.1:\(port)", "--tls-dir", "certs", "--json"], in: dir)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        var out: [String: [String: Int64]] = [:]
        for b in obj["budgets"] as? [[String: Any]] ?? [] {
            var fields: [String: Int64] = [:]
            for (k, v) in b { if let s = v as? String, let n = Int64(s) { fields[k] = n } else if let n = v as? Int { fields[k] = Int64(n) } }
            out[b["budget"] as! String] = fields
        }
        return out
    }

    @Test("a coordinator and four node processes: exact cap; SIGKILL counts as spent at expiry, SIGTERM gives back at once")
    func fleetOfProcesses() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try run(["certs", "init", "--dir", "certs", "--trust-domain", "allot.test"], in: dir)
        _ = try run(["certs", "issue", "--dir", "certs", "--role", "coordinator", "--name", "c1", "--ip", "127.0.0.1"], in: dir)
        _ = try run(["certs", "issue", "--dir", "certs", "--role", "admin", "--name", "ops"], in: dir)
        for i in 1...4 { _ = try run(["certs", "issue", "--dir", "certs", "--role", "node", "--name", "gw-\(i)"], in: dir) }
        let keyMode = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("certs/node-gw-1-key.pem").path)[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        try """
        coordinator:
          name: c1
          listen: 127.0.0.1:0
          admin: 127.0.0.1:0
        tls:
          dir: certs
        lease:
          ttl: 2s
          refresh_interval: 500ms
        budgets:
          - id: rps
            unit: requests
            kind: rate
            limit: 3000
            burst: 3000
          - id: day
            unit: requests
            kind: quota
            allowance: 1000000
            window: day
        """.write(to: dir.appendingPathComponent("allot.yaml"), atomically: true, encoding: .utf8)

        let coordinator = try start(["coordinator", "--config", "allot.yaml"], in: dir)
        defer { coordinator.process.terminate() }
        var port = 0
        for _ in 0..<100 where port == 0 {
            try await Task.sleep(for: .milliseconds(50))
            if let r = coordinator.readAll().range(of: #"listening on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(coordinator.text[r].split(separator: ":").last!) ?? 0
            }
        }
        #expect(port > 0, "the coordinator did not start: \(coordinator.text)")

        var nodes: [Proc] = []
        for i in 1...4 {
            nodes.append(try start(["node-load", "--config", "allot.yaml", "--coordinator", "127.0.0.1:\(port)", "--tls-dir", "certs",
                                    "--name", "gw-\(i)", "--rate", "1500", "--seconds", "8"], in: dir))
        }
        try await Task.sleep(for: .seconds(2))
        let before = try status(port, in: dir)
        #expect(before["day"]?["holders"] == 4)

        // Rotate the coordinator's certificate and SIGHUP it: it keeps serving, with the new one.
        _ = try run(["certs", "issue", "--dir", "certs", "--role", "coordinator", "--name", "c1", "--ip", "127.0.0.1"], in: dir)
        kill(coordinator.process.processIdentifier, SIGHUP)
        try await Task.sleep(for: .milliseconds(200))
        #expect(coordinator.process.isRunning)
        #expect((try status(port, in: dir)["day"]?["holders"]) == 4, "existing leases survive the reload")

        // SIGTERM gw-4: it releases everything before it exits.
        nodes[3].process.terminate()
        nodes[3].process.waitUntilExit()
        let afterTerm = try status(port, in: dir)
        #expect((afterTerm["day"]?["holders"] ?? 0) == 3, "the stopped node's lease is closed at once")
        #expect((afterTerm["day"]?["outstanding"] ?? 0) < (before["day"]?["outstanding"] ?? 0))

        // SIGKILL gw-3: nothing is returned; its lease runs out and is counted as spent.
        kill(nodes[2].process.processIdentifier, SIGKILL)
        nodes[2].process.waitUntilExit()
        try await Task.sleep(for: .milliseconds(2500)) // > one lease TTL
        let afterKill = try status(port, in: dir)
        #expect((afterKill["day"]?["expiredSpent"] ?? 0) > 0, "unreturned units counted as spent at expiry: \(afterKill)")
        #expect((afterKill["day"]?["holders"] ?? 0) == 2)

        // The others carry on to their end and report what they admitted.
        var reports: [[String: Any]] = []
        for n in [nodes[0], nodes[1], nodes[3]] {
            n.process.waitUntilExit()
            let line = n.readAll() + String(decoding: n.out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            if let l = line.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
               let obj = try JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any] { reports.append(obj) }
        }
        #expect(reports.count == 3)
        let admitted = reports.reduce(0) { $0 + ($1["admitted"] as? Int ?? 0) }
        let first = reports.compactMap { $0["first_ns"] as? Int64 ?? ($0["first_ns"] as? Int).map(Int64.init) }.min() ?? 0
        let last = reports.compactMap { $0["last_ns"] as? Int64 ?? ($0["last_ns"] as? Int).map(Int64.init) }.max() ?? 0
        // Fleet-wide (the killed node's admissions included) the rate cap holds: burst + rate·T.
        let final = try status(port, in: dir)
        let consumed = final["day"]?["consumed"] ?? 0
        let spent = consumed + (final["day"]?["expiredSpent"] ?? 0)
        #expect(Int64(admitted) <= consumed, "survivors' admissions are all accounted for")
        #expect(Double(spent) <= 3000 + 3000 * Double(last - first) / 1e9 + 3000,
                "spent \(spent) over \(Double(last - first) / 1e9) s")
        // Everyone gave their leases back (a release still on the wire may take a moment).
        var holders = final["day"]?["holders"] ?? 0
        for _ in 0..<20 where holders > 0 {
            try await Task.sleep(for: .milliseconds(100))
            holders = try status(port, in: dir)["day"]?["holders"] ?? 0
        }
        #expect(holders == 0, "leases still held: \(holders)")
        coordinator.process.terminate()
        coordinator.process.waitUntilExit()
        #expect(coordinator.process.terminationStatus == 0, "SIGTERM: a clean exit")
    }
}
