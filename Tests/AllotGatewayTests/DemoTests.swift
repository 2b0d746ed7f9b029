import AllotCore
@testable import AllotDemo
import AllotGateway
import Foundation
import Testing

/// Must-show 6 and the command line: `allot demo` runs to completion with zero overshoot;
/// `allot gateway` refuses bad configuration clearly.
@Suite("allot demo and gateway command line", .serialized)
struct DemoTests {
    func run(_ args: [String]) throws -> (status: Int32, output: String) { try runAllot(args) }

    @Test("allot demo (shortened) completes, shows zero overshoot, flags the runaway agent and writes the report")
    func demo() throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("allot-demo-\(UUID().uuidString).html")
        let (status, out) = try run(["demo", "--duration", "6", "--quiet", "--report", report.path])
        #expect(status == 0, "\(out)")
        #expect(out.contains("total overshoot: 0"), "\(out)")
        #expect(out.contains("runaway flagged: mallory"), "\(out)")
        for consumer in ["alice", "bob", "carol", "dave", "eve", "mallory"] { #expect(out.contains(consumer)) }
        #expect(out.contains("coordinator messages per 1,000 requests"))
        let html = try String(contentsOf: report, encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("cap ") && html.contains("gw-3"))
        // Every row of the summary says 0 overshoot.
        let rows = out.split(separator: "\n").filter { $0.contains("/consumer=") || $0.contains("/team=") }
        #expect(rows.count >= 15)
        #expect(rows.allSatisfy { $0.hasSuffix(" 0") }, "\(rows)")
        #expect(out.contains("concurrency refusals with fewer than the limit in flight fleet-wide") && out.contains("eve "), "\(out)")
        // Tokens per second against each token cap, beside post-paid counting: every consumer
        // served (the Responses and Messages shapes too), Allot's overshoot 0.
        let tokenRows = out.split(separator: "\n").map { $0.split(separator: " ") }.filter { $0.count == 9 && ["chat", "responses", "messages"].contains($0[1]) }
        #expect(Set(tokenRows.map { String($0[0]) }) == ["alice", "bob", "carol", "dave", "eve", "mallory"], "\(out)")
        #expect(Set(tokenRows.map { String($0[1]) }) == ["chat", "responses", "messages"])
        #expect(tokenRows.allSatisfy { (Double($0[3]) ?? 0) > 0 && $0[5] == "0" }, "\(tokenRows)")
        #expect(html.contains("tokens admitted per second, Allot against post-paid counting") && html.contains("post-paid (overshoot"))
    }

    @Test("post-paid replay (virtual time): what is in flight when the counter runs out lands above the cap, measured as for Allot")
    func postPaid() throws {
        let spec = try BudgetSpec(id: "t", unit: .tokens, kind: .rate(limit: 100, period: .seconds(1), burst: 100))
        // Ten requests of 50 tokens, one every 100 ms, each taking 1 s: none has ended when the
        // next arrives, so the counter never looks spent and all ten pass.
        let offered = (0..<10).map { PostPaid.Offered(consumer: "c", at: Instant(nanoseconds: Int64($0) * 100_000_000), tokens: 50, seconds: 1) }
        let through = PostPaid.replay(offered, tokens: spec, requests: nil)
        #expect(through.count == 10)
        // 500 tokens admitted within 0.9 s against burst 100 + 100/s × 0.9 s = 190.
        #expect(PostPaid.overshoot(through, spec: spec) == 310)
        // Short requests: each is counted before the next arrives; the counter stops them.
        let quick = (0..<10).map { PostPaid.Offered(consumer: "c", at: Instant(nanoseconds: Int64($0) * 100_000_000), tokens: 50, seconds: 0.01) }
        let fewer = PostPaid.replay(quick, tokens: spec, requests: nil)
        #expect(fewer.count < 10 && PostPaid.overshoot(fewer, spec: spec) <= 50, "\(fewer.count)")
        // The request rate is counted up front: 2 at once, then 1 per second.
        let requests = try BudgetSpec(id: "r", unit: .requests, kind: .rate(limit: 1, period: .seconds(1), burst: 2))
        #expect(PostPaid.replay(offered, tokens: spec, requests: requests).count == 2)
    }

    @Test("allot gateway: a bad configuration or consumers file is a clear error and a non-zero exit")
    func badConfig() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-gwcfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let cfg = dir.appendingPathComponent("allot.yaml")
        try (testConfigYAML + "\n  colour: blue\n").write(to: cfg, atomically: true, encoding: .utf8)
        var r = try run(["gateway", "--config", cfg.path])
        #expect(r.status != 0 && r.output.contains("gateway.colour: unknown key"), "\(r.output)")
        try testConfigYAML.write(to: cfg, atomically: true, encoding: .utf8)
        r = try run(["gateway", "--config", cfg.path])
        #expect(r.status != 0 && r.output.contains("cannot read the consumers file"), "\(r.output)")
        try "consumers:\n  - {id: x, tier: gold, key_sha256: \(ConsumerDirectory.hash("k"))}\n"
            .write(to: dir.appendingPathComponent("consumers.yaml"), atomically: true, encoding: .utf8)
        r = try run(["gateway", "--config", cfg.path])
        #expect(r.status != 0 && r.output.contains("'gold' is not configured"), "\(r.output)")
        r = try run(["hash-key", "sk-test"])
        #expect(r.status == 0 && r.output.trimmingCharacters(in: .whitespacesAndNewlines) == ConsumerDirectory.hash("sk-test"))
        r = try run(["demo", "--duration", "0"])
        #expect(r.status != 0 && r.output.contains("--duration"))
    }
}
