import AllotDemo
import AllotCore
import AllotGateway
import AllotSimulator
import Foundation
import Testing

/// Must-shows 2, 3 and 5: three gateway nodes share one consumer's budgets; caps hold
/// fleet-wide, permits come back, and the audit trail reconciles with the coordinator's ledger.
@Suite("Gateway fleet caps", .serialized)
struct FleetCapTests {
    @Test("three nodes under concurrent load with large max_tokens never settle more than the tokens/min or monthly cap")
    func sharedTokenCaps() async throws {
        let (config, consumers) = try testConfig()
        let events = EventLog()
        let trace = ProcessInfo.processInfo.environment["ALLOT_TEST_TRACE"] != nil
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 3, logLevel: trace ? .trace : .critical,
                                               observer: events.observer)
        let deadline = ContinuousClock.now + .seconds(4)
        var statuses: [Int: Int] = [:]
        try await withThrowingTaskGroup(of: [Int].self) { group in
            for node in 0..<3 {
                for _ in 0..<3 {
                    let port = fleet.proxyPorts[node]
                    group.addTask {
                        var out: [Int] = []
                        while ContinuousClock.now < deadline {
                            // Each reserves ~1,600 tokens and uses ~1,240: post-paid peers would let all through.
                            let r = try await call(port: port, key: "sk-pro-1", body: chatBody(model: "large", maxTokens: 1500),
                                                   headers: [("x-mock-completion-tokens", "1200"), ("x-mock-latency-ms", "20")])
                            out.append(r.status)
                            if r.status == 429 { try await Task.sleep(for: .milliseconds(20)) }
                        }
                        return out
                    }
                }
            }
            for try await list in group { for s in list { statuses[s, default: 0] += 1 } }
        }
        await fleet.stop()
        #expect(Set(statuses.keys).isSubset(of: [200, 429]), "\(statuses)")
        let records = try auditRecords(fleet).filter { $0.consumer == "p1" && $0.decision == "admit" }
        let settled = records.reduce(Int64(0)) { $0 + $1.inputTokens + $1.outputTokens }
        // The monthly quota (15,000) binds before the per-minute rate (20,000 per minute).
        #expect(settled <= 15_000)
        // Near exhaustion each node may keep a fragment smaller than one request's bound
        // (~1,650 here) that nobody can use: at most one bound per node stays idle.
        #expect(settled >= 15_000 - 3 * 1_700, "the fleet used \(settled) of 15,000: too much left idle")
        let month = try #require(fleet.coordinator.allocatorStatus("pro.month/consumer=p1"))
        #expect(month.consumed == settled, "ledger \(month.consumed) vs audit \(settled)")
        // Per minute: every interval's settled tokens, placed at admission, within burst + rate·T.
        let tpm = try BudgetSpec(id: "pro.tpm/consumer=p1", unit: .tokens, kind: .rate(limit: 20_000, period: .seconds(60), burst: 20_000))
        #expect(BudgetChecker.replay(events.all, consumers: ["p1"], spec: tpm).excess <= 0)
        #expect(records.count >= 9 && statuses[429, default: 0] > 0, "\(fleetSummary(events.all))")
    }

    @Test("the agent tier's concurrency ceiling holds fleet-wide; permits come back after disconnect, upstream error and timeout")
    func concurrencyCeiling() async throws {
        let (config, consumers) = try testConfig()
        let events = EventLog()
        var mock = MockUpstream.Settings()
        mock.hangLimit = .seconds(2)
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 3, mock: mock, observer: events.observer)
        // 12 slow streams at once against a ceiling of 3.
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<12 {
                let port = fleet.proxyPorts[i % 3]
                group.addTask {
                    try await call(port: port, key: "sk-agent-1", body: chatBody(stream: true),
                                   headers: [("x-mock-latency-ms", "400")]).status
                }
            }
            var out: [Int] = []
            for try await s in group { out.append(s) }
            return out
        }
        #expect(statuses.filter { $0 == 200 }.count >= 1)
        #expect(statuses.filter { $0 == 200 }.count <= 3)
        let inflight = try BudgetSpec(id: "agent.inflight/consumer=a1", unit: .requests, kind: .concurrency(limit: 3))
        #expect(BudgetChecker.replay(events.all, consumers: ["a1"], spec: inflight).excess <= 0)
        // Idle nodes give their permits back after `idle_release` (2 s).
        try await Task.sleep(for: .milliseconds(2500))

        // A client that goes away mid-stream, an upstream error and an upstream that hangs.
        let port = fleet.proxyPorts[0]
        let cut = Task { try await call(port: port, key: "sk-agent-1", body: chatBody(stream: true), headers: [("x-mock-chunk-ms", "300")]) }
        try await Task.sleep(for: .milliseconds(500))
        cut.cancel()
        let err = try await call(port: port, key: "sk-agent-1", body: chatBody(), headers: [("x-mock-fault", "error")])
        #expect(err.status == 500)
        let hang = try await call(port: port, key: "sk-agent-1", body: chatBody(), headers: [("x-mock-fault", "hang")])
        #expect(hang.status == 504)
        #expect(hang.errorCode == "upstream_timeout")
        _ = await cut.result
        // Every permit is back: three at once are admitted again on one node.
        try await Task.sleep(for: .milliseconds(200))
        let again = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask { try await call(port: port, key: "sk-agent-1", body: chatBody(), headers: [("x-mock-latency-ms", "200")]).status }
            }
            var out: [Int] = []
            for try await s in group { out.append(s) }
            return out
        }
        #expect(again == [200, 200, 200])
        for gw in fleet.gateways {
            let held = gw.core.enforcer.withEnforcer { e in e.handle(for: "agent.inflight/consumer=a1").map { e.status($0).reserved } ?? 0 }
            #expect(held == 0, "\(gw.core.node) still holds \(held) permits")
        }
        await fleet.stop()
        let settlements = try auditRecords(fleet).filter { $0.consumer == "a1" && $0.decision == "admit" }.compactMap(\.settlement)
        #expect(settlements.contains("bound"), "the abandoned stream is charged its bound")
        #expect(settlements.contains("error") && settlements.contains("refund"))
    }

    @Test("the audit chain verifies, a tampered line is found, and summary sums equal the ledger")
    func auditReconciles() async throws {
        let (config, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 2)
        for i in 0..<10 {
            let key = i % 2 == 0 ? "sk-pro-1" : "sk-pro-2"
            _ = try await call(port: fleet.proxyPorts[i % 2], key: key, body: chatBody(maxTokens: 200, stream: i % 3 == 0),
                               headers: [("x-mock-completion-tokens", "\(50 + i)")])
        }
        await fleet.stop()
        var files: [[URL]] = []
        for i in 0..<2 {
            let f = AuditLog.files(in: fleet.auditDirectory(i))
            #expect(AuditVerifier.verify(f).firstBreak == nil)
            files.append(f)
        }
        let totals = try AuditVerifier.summary(files.flatMap { $0 })
        for consumer in ["p1", "p2"] {
            let t = try #require(totals["consumer=\(consumer)"])
            let ledger = try #require(fleet.coordinator.allocatorStatus(BudgetID("pro.month/consumer=\(consumer)")))
            #expect(t.inputTokens + t.outputTokens == ledger.consumed, "\(consumer): audit \(t.inputTokens + t.outputTokens) vs ledger \(ledger.consumed)")
            #expect(t.admitted == 5)
        }
        // The team's spend budget holds the sum of both consumers' cost.
        let spend = try #require(fleet.coordinator.allocatorStatus("pro.spend/team=search"))
        #expect(spend.consumed == totals["tier=pro"]!.costMicroDollars)
        // Edit one number in the first node's trail: verify names that line.
        let file = files[0][0]
        var lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[2] = lines[2].replacingOccurrences(of: "\"output_tokens\":", with: "\"output_tokens\":1")
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let broken = try #require(AuditVerifier.verify(files[0]).firstBreak)
        #expect(broken.line == 4, "the record after the edited one no longer chains: \(broken)")
    }
}


/// What each node admitted and what denied it, in time order of the first event: printed when
/// a fleet test admits too little, so a failing run shows where the budget sat.
func fleetSummary(_ events: [GatewayEvent]) -> String {
    guard let t0 = events.map(\.time).min() else { return "no events" }
    var lines: [String] = []
    for e in events.sorted(by: { $0.time < $1.time }) where e.kind != .settle {
        let ms = (e.time - t0).nanoseconds / 1_000_000
        lines.append("\(ms) ms \(e.node) \(e.kind) \(e.budget ?? "") \(e.cost.map { "\($0)" } ?? "")")
    }
    // Consecutive identical denials collapse into one line with a count.
    var out: [String] = []
    var last = "", repeats = 0
    for l in lines {
        let key = l.split(separator: " ", maxSplits: 2).last.map(String.init) ?? l
        if key == last { repeats += 1; continue }
        if repeats > 0 { out.append("  … ×\(repeats)") }
        out.append(l)
        last = key
        repeats = 0
    }
    if repeats > 0 { out.append("  … ×\(repeats)") }
    return out.joined(separator: "\n")
}
