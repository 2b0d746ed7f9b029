import AllotConfig
import AllotCore
import AllotGateway
import AllotTransport
import Foundation
import Testing

/// The official `openai` and `anthropic` Python SDKs (from PyPI, installed by scripts/test.sh
/// into a throwaway venv named by ALLOT_SDK_PYTHON) against a gateway whose upstream replays
/// recorded-shape answers: the SDKs decide whether requests, answers and errors have the
/// shapes they expect, and the usage they parse is what the gateway charged.
@Suite("Official client SDKs", .serialized,
       .enabled(if: ProcessInfo.processInfo.environment["ALLOT_SDK_PYTHON"] != nil,
                "ALLOT_SDK_PYTHON is not set (scripts/test.sh sets it when pip can install the SDKs)"))
struct SDKTests {
    @Test("openai and anthropic SDKs, streaming and not: parsed usage = charged usage = ledger")
    func officialClients() async throws {
        let python = try #require(ProcessInfo.processInfo.environment["ALLOT_SDK_PYTHON"])
        let (fleet, upstream) = try await FixtureTests().start()
        let (status, stdout, stderr) = try await Self.run(python, "sdk_clients.py", ["http://127.0.0.1:\(fleet.proxyPorts[0])"])
        await fleet.stop()
        upstream.stop()
        #expect(status == 0, "\(stdout)\n\(stderr)")
        let lines = stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let parsed = lines.filter { !(($0["call"] as? String) ?? "").contains("error") }
            .map { (($0["input"] as? NSNumber)?.int64Value ?? -1) + (($0["output"] as? NSNumber)?.int64Value ?? -1) }
        #expect(lines.compactMap { $0["call"] as? String }.filter { $0.contains("error") } == ["openai error 404", "anthropic error 400"])
        let charged = try auditRecords(fleet).filter { $0.decision == "admit" && $0.route != "models" }
            .map { $0.inputTokens + $0.outputTokens }
        #expect(parsed == [231, 99, 780, 48, 8, 1_223, 1_228], "what the SDKs parsed")
        #expect(charged == parsed, "what the gateway charged")
        let ledger = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(ledger.consumed == charged.reduce(0, +))
    }

    @Test("a key made at run time (allot keys create) works through both SDKs; a revoked one is the SDKs' AuthenticationError")
    func runtimeKeys() async throws {
        let python = try #require(ProcessInfo.processInfo.environment["ALLOT_SDK_PYTHON"])
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent("allot-sdkkeys-\(UUID().uuidString.prefix(8)).db").path
        let (fleet, upstream) = try await FixtureTests().start(ledgerPath: ledger)
        let certs = fleet.directory.appendingPathComponent("certs")
        _ = try CertificateAuthority.open(certs).issue(role: .admin, name: "ops")
        func keys(_ args: [String]) throws -> String {
            let r = try runAllot(["keys"] + args + ["--coordinator", "127.0.0.1:\(fleet.coordinatorPort)", "--tls-dir", certs.path])
            #expect(r.status == 0, "\(r.output)")
            return r.output
        }
        func newKey() throws -> String {
            try #require(try keys(["create", "--consumer", "sdk-user", "--tier", "pro"]).split(separator: "\n").map(String.init).first { $0.hasPrefix("sk-allot-") })
        }
        let live = try newKey(), revoked = try newKey()
        _ = try keys(["revoke", String(Directory.sha256(revoked).prefix(12))])
        try await Task.sleep(for: .milliseconds(300)) // pushed at once; leave the gateway a moment
        let (status, stdout, stderr) = try await Self.run(python, "sdk_keys.py", ["http://127.0.0.1:\(fleet.proxyPorts[0])", live, revoked])
        await fleet.stop()
        upstream.stop()
        try? FileManager.default.removeItem(atPath: ledger)
        #expect(status == 0, "\(stdout)\n\(stderr)")
        let lines = stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let byCall = Dictionary(lines.map { ($0["call"] as? String ?? "", $0) }) { a, _ in a }
        #expect((byCall["openai live"]?["usage"] as? Int ?? 0) > 0 && (byCall["anthropic live"]?["usage"] as? Int ?? 0) > 0, "\(stdout)")
        #expect(byCall["openai revoked"]?["error"] as? String == "AuthenticationError" && byCall["openai revoked"]?["status"] as? Int == 401)
        #expect(byCall["openai revoked"]?["code"] as? String == "invalid_api_key")
        #expect(byCall["anthropic revoked"]?["error"] as? String == "AuthenticationError" && byCall["anthropic revoked"]?["status"] as? Int == 401)
        let audited = try auditRecords(fleet).filter { $0.consumer == "sdk-user" && $0.decision == "admit" }
        #expect(audited.count == 2 && audited.allSatisfy { $0.keyID == String(Directory.sha256(live).prefix(12)) }, "the key id in the audit trail")
    }

    /// Runs `Tests/sdk/<script>` with the SDKs' Python, bounded to two minutes (a few calls on loopback).
    static func run(_ python: String, _ script: String, _ args: [String]) async throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("sdk/\(script)").path] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let deadline = ContinuousClock.now + .seconds(120)
        while p.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }
}
