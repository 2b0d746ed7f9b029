import AllotCore
import AllotGateway
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
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("sdk/sdk_clients.py")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [script.path, "http://127.0.0.1:\(fleet.proxyPorts[0])"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Bounded: the script makes eleven calls on loopback.
        let deadline = ContinuousClock.now + .seconds(120)
        while p.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        await fleet.stop()
        upstream.stop()
        #expect(p.terminationStatus == 0, "\(stdout)\n\(stderr)")
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
}
