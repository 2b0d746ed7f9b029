import Foundation
import Testing

/// The `allot` binary answers bad input with a clear error and a non-zero exit.
@Suite("allot simulate command line")
struct CommandLineTests {
    /// The binary `swift build` put next to the test bundle (`allot`, or `allot-bench`).
    static func binary(_ name: String = "allot") -> URL? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for config in ["debug", "release"] {
            let url = root.appendingPathComponent(".build/\(config)/\(name)")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    func run(_ args: [String], binary name: String = "allot") throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = try #require(Self.binary(name), "build the \(name) binary first (swift build)")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test("unknown scenario, unknown strategy and out-of-range numbers are refused")
    func badInput() throws {
        let cases: [([String], String)] = [
            (["simulate", "--scenario", "tsunami"], "unknown scenario 'tsunami'"),
            (["simulate", "--strategies", "allot,magic"], "unknown strategy 'magic'"),
            (["simulate", "--nodes", "0"], "--nodes must be between 1 and 4096"),
            (["simulate", "--seconds=-1"], "--seconds must be in (0, 3600]"),
        ]
        for (args, message) in cases {
            let r = try run(args)
            #expect(r.status != 0, "\(args) should fail")
            #expect(r.output.contains(message), "\(args): \(r.output)")
        }
    }

    @Test("the same seed gives the same report in separate processes (no hash-order dependence)")
    func deterministicAcrossProcesses() throws {
        let args = ["simulate", "--scenario", "shift", "--nodes", "8", "--seconds", "6", "--seed", "2", "--json"]
        let a = try run(args), b = try run(args)
        #expect(a.status == 0 && a.output == b.output)
    }

    @Test("--version, grouped --help, and an unknown --log-level refused with the list")
    func versionHelpAndLogLevel() throws {
        let v = try run(["--version"])
        #expect(v.status == 0 && v.output.hasPrefix("allot ") && v.output.contains("lease protocol 1"), "\(v.output)")
        let help = try run(["--help"])
        #expect(help.status == 0)
        let order = ["SERVE", "\n  coordinator ", "\n  gateway ", "OPERATE", "\n  status ", "TOOLS", "\n  demo ", "\n  simulate "].map { help.output.range(of: $0)?.lowerBound }
        #expect(order.allSatisfy { $0 != nil } && order.compactMap { $0 } == order.compactMap { $0 }.sorted(), "\(help.output)")
        #expect(!help.output.contains("bench-node") && !help.output.contains("bench-scale"), "benchmark drivers live in allot-bench")
        for command in [["coordinator", "--config", "x.yaml"], ["gateway", "--config", "x.yaml"]] {
            let bad = try run(command + ["--log-level", "loud"])
            #expect(bad.status != 0 && bad.output.contains("loud") && bad.output.contains("warning"), "\(bad.output)")
        }
    }

    @Test("a small run prints the table and JSON")
    func smallRun() throws {
        let r = try run(["simulate", "--scenario", "steady", "--nodes", "2", "--seconds", "1", "--json"])
        #expect(r.status == 0)
        #expect(r.output.contains("\"scenario\":\"steady\""))
    }

    /// Runs `allot-bench node` with `args` and a fresh attempts file: its JSON summary and the
    /// attempts, one line of fields each.
    func benchNode(_ args: [String]) throws -> (summary: [String: Any], lines: [[Substring]]) {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("attempts-\(UUID().uuidString).txt").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try run(["node"] + args + ["--out", out], binary: "allot-bench")
        #expect(r.status == 0, "\(r.output)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any])
        return (summary, try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") })
    }

    @Test("allot-bench node replays its trace against a local bucket: every attempt written, never over the bucket; bad arguments refused")
    func benchNode() throws {
        // One node of two: static-split gives it 100/s with a burst of 10; it offers ~400/s for 1 s.
        let args = ["--strategy", "static-split", "--pattern", "steady", "--index", "0", "--fleet", "2",
                    "--rate", "400", "--seconds", "1", "--limit", "200", "--burst", "20"]
        let (summary, lines) = try benchNode(args)
        let attempts = summary["attempts"] as? Int ?? -1
        let admitted = summary["admitted"] as? Int ?? -1
        #expect(lines.count == attempts && attempts > 250, "\(lines.count) lines for \(attempts) attempts")
        #expect(lines.filter { $0[2] == "1" }.count == admitted)
        #expect(admitted >= 95 && admitted <= 10 + 100 + 5, "admitted \(admitted): not the 100/s + 10 bucket")
        // The same seed, the same trace: attempts are identical in a second run.
        #expect(try benchNode(args).summary["attempts"] as? Int == attempts)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("never-\(UUID().uuidString).txt").path
        for (args, message) in [
            (["node", "--strategy", "allot", "--pattern", "steady", "--index", "0", "--fleet", "1", "--rate", "1", "--seconds", "1",
              "--limit", "1", "--burst", "1", "--out", out], "needs --config"),
            (["node", "--strategy", "magic", "--pattern", "steady", "--index", "0", "--fleet", "1", "--rate", "1", "--seconds", "1",
              "--limit", "1", "--burst", "1", "--out", out], "magic"),
            (["node", "--strategy", "redis-bucket", "--pattern", "steady", "--index", "0", "--fleet", "1", "--rate", "1", "--seconds", "1",
              "--limit", "1", "--burst", "1", "--out", out, "--redis", "127.0.0.1:1"], "cannot connect to Redis"),
        ] {
            let bad = try run(args, binary: "allot-bench")
            #expect(bad.status != 0 && bad.output.contains(message), "\(args): \(bad.output)")
        }
    }

    @Test("allot-bench node's tokens trace keeps many requests in flight, each known by its bound until it ends")
    func benchNodeTokens() throws {
        // ~100 requests of 50–5,000 tokens in 2 s, each running 0.5–8 s; a bucket of 30,000 + 30,000/s.
        let (summary, lines) = try benchNode(["--strategy", "static-split", "--pattern", "tokens", "--index", "0", "--fleet", "1",
                                              "--rate", "50", "--seconds", "2", "--limit", "30000", "--burst", "30000"])
        #expect((summary["peak_in_flight"] as? Int ?? 0) >= 10, "\(summary)")
        let costs = lines.map { Int64($0[1])! }
        #expect(costs.allSatisfy { (50...5_000).contains($0) } && Set(costs).count > 10)
        // Real counts placed at admission: within what the bucket allows over the run.
        let admittedUnits = summary["admitted_units"] as? Int ?? -1
        #expect(admittedUnits > 0 && admittedUnits <= 30_000 + 30_000 * 2 + 1, "\(summary)")
    }

    @Test("bench/real/aggregate.py: overshoot against the bucket, utilization against an exact one, pooled latency, calls per 1,000")
    func aggregate() throws {
        let root = try #require(Self.binary()).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let raw = FileManager.default.temporaryDirectory.appendingPathComponent("agg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: raw, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: raw) }
        // A bucket of 10 refilling 10/s: 10 admitted at 0, 5 more at 50 ms (over: 15 in 0.1 s
        // where 11 are allowed), 3 denied at 60 ms; one node's summary with 30 calls.
        try "1000000000 10 1 1000\n1050000000 5 1 2000\n1060000000 3 0 3000\n".write(to: raw.appendingPathComponent("attempts-0.txt"), atomically: true, encoding: .utf8)
        try "{\"calls\": 30, \"seconds\": 1}\n".write(to: raw.appendingPathComponent("node-0.json"), atomically: true, encoding: .utf8)
        let out = raw.appendingPathComponent("result.json")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", root.appendingPathComponent("bench/real/aggregate.py").path, raw.path, "10", "10", "steady", "test", out.path]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let r = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any])
        #expect(abs((r["overshoot"] as? Double ?? 0) - 0.3636) < 0.001, "\(r)")
        #expect(r["excess_units"] as? Double == 4)
        #expect(r["utilization"] as? Double == 1.5) // the exact bucket admits only the first 10
        #expect(r["admitted"] as? Int == 2 && r["offered"] as? Int == 3)
        #expect(r["p50_us"] as? Double == 2 && r["calls_per_1k"] as? Double == 15_000)
    }

    @Test("allot-bench scale measures grants per second and memory for a number of budgets")
    func benchScale() throws {
        let r = try run(["scale", "--budgets", "2000", "--seconds", "0.3"], binary: "allot-bench")
        #expect(r.status == 0, "\(r.output)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.output.utf8)) as? [String: Any])
        #expect(obj["kind"] as? String == "budgets" && obj["count"] as? Int == 2000)
        #expect((obj["grants_per_second"] as? Double ?? 0) > 1_000)
        let bad = try run(["scale", "--budgets", "10", "--connections", "2"], binary: "allot-bench")
        #expect(bad.status != 0 && bad.output.contains("exactly one"))
    }
}
