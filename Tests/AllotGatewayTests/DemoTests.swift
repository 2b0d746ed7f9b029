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
