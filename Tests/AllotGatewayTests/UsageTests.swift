@testable import AllotGateway
import AllotCore
import AllotCoordinator
import AllotDemo
import AllotTransport
import AllotWire
import Foundation
import Testing

/// `GET /v1/allot/usage` (issue 17, must-show 5): a consumer's own budgets, fleet-wide.
@Suite("Gateway usage endpoint", .serialized)
struct UsageTests {
    @Test("real time, 2 gateways: the usage one gateway answers matches `allot status` for the consumer's budgets, counting what the other gateway spent")
    func matchesStatus() async throws {
        // With a soft limit at 1 % of the monthly quota (150 tokens), crossed by the spend below.
        let yaml = testConfigYAML.replacingOccurrences(of: "window: month, time_zone: Europe/Berlin}",
                                                       with: "window: month, time_zone: Europe/Berlin, soft_limits: [1, 99]}")
        let (config, consumers) = try testConfig(yaml: yaml)
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 2)
        // p1 spends on gw-1 only; it asks gw-2, which has served it nothing.
        var spent: Int64 = 0
        for _ in 0..<3 {
            let r = try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: chatBody(maxTokens: 50))
            #expect(r.status == 200)
            spent += Int64((r.json?["usage"] as? [String: Any])?["total_tokens"] as? Int ?? 0)
        }
        #expect(spent > 0)
        // The node reports its consumption at its next refresh (1 s here); wait for it, bounded.
        var usage: [String: [String: Any]] = [:]
        for _ in 0..<60 {
            let reply = try await call(port: fleet.proxyPorts[1], path: "/v1/allot/usage", method: .GET, key: "sk-pro-1", body: nil)
            #expect(reply.status == 200 && reply.headers["cache-control"] == "no-store")
            #expect(reply.json?["consumer"] as? String == "p1" && reply.json?["tier"] as? String == "pro")
            usage = Dictionary((reply.json?["budgets"] as? [[String: Any]] ?? []).map { ($0["budget"] as! String, $0) }) { a, _ in a }
            if usage["pro.month/consumer=p1"]?["used"] as? Int == Int(spent) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Every budget p1 can be charged to: per consumer, per team, per model, per route.
        #expect(Set(usage.keys).isSuperset(of: ["pro.tpm/consumer=p1", "pro.month/consumer=p1", "pro.spend/team=search",
                                                "pro.per-model/consumer=p1,model=small", "pro.per-model/consumer=p1,model=large",
                                                "pro.per-route/consumer=p1,route=chat"]))
        #expect(usage.keys.allSatisfy { $0.hasPrefix("pro.") })

        // `allot status` with an admin certificate, as an operator runs it.
        let certs = fleet.directory.appendingPathComponent("certs")
        _ = try CertificateAuthority.open(certs).issue(role: .admin, name: "ops")
        let run = try runAllot(["status", "--coordinator", "127.0.0.1:\(fleet.coordinatorPort)", "--tls-dir", certs.path, "--json"])
        #expect(run.status == 0, "\(run.output)")
        let status = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        var books: [String: [String: Int64]] = [:]
        for b in status["budgets"] as? [[String: Any]] ?? [] {
            var fields: [String: Int64] = [:]
            for (k, v) in b { if let s = v as? String, let n = Int64(s) { fields[k] = n } else if let n = v as? Int { fields[k] = Int64(n) } }
            books[b["budget"] as! String] = fields
        }
        // The quota: used and remaining are the coordinator's, to the unit, and include gw-1's spend.
        let month = try #require(usage["pro.month/consumer=p1"])
        let monthBooks = try #require(books["pro.month/consumer=p1"])
        #expect(month["source"] as? String == "coordinator")
        #expect(Int64(month["used"] as? Int ?? -1) == (monthBooks["consumed"] ?? 0) + (monthBooks["expiredSpent"] ?? 0))
        #expect(Int64(month["used"] as? Int ?? -1) == spent)
        #expect(Int64(month["limit"] as? Int ?? -1) == monthBooks["limit"])
        #expect(Int64(month["remaining"] as? Int ?? -1) == 15_000 - spent)
        let window = try CalendarWindow(.month, timeZone: "Europe/Berlin").window(containing: WallClock.now())
        #expect(month["reset_at"] as? String == GatewayCore.rfc3339(window.end))
        // A rate budget: free at the coordinator plus what gw-1 (holding the lease) last
        // reported spendable: fleet-wide, not gw-2's (it holds nothing for p1).
        let tpm = try #require(usage["pro.tpm/consumer=p1"])
        let tpmBooks = try #require(books["pro.tpm/consumer=p1"])
        #expect(tpm["source"] as? String == "coordinator" && tpm["limit"] as? Int == 20_000 && tpm["period_seconds"] as? Int == 60)
        #expect(fleet.gateways[1].core.enforcer.withEnforcer { $0.handle(for: "pro.tpm/consumer=p1") } == nil)
        let tpmRemaining = Int64(tpm["remaining"] as? Int ?? -1)
        let fleetFree = min(20_000, (tpmBooks["pool"] ?? 0) + (tpmBooks["heldAvailable"] ?? 0))
        #expect(tpmRemaining > 20_000 - spent - 20_000 / 60 * 5 && tpmRemaining <= 20_000, "usage \(tpmRemaining), status \(tpmBooks)")
        // Read a moment apart while the bucket refills (at most 5 s of the rate between them).
        #expect(abs(fleetFree - tpmRemaining) <= 20_000 / 60 * 5, "usage \(tpmRemaining), status \(tpmBooks)")
        // The soft limit: counted once at the coordinator, shown as the budget's level.
        let metricsText = AdminServer.metricsText(fleet.coordinator)
        #expect(metricsText.contains(#"allot_soft_limit_crossings_total{budget="pro.month/consumer=p1",percent="1"} 1"#))
        #expect(metricsText.contains(#"allot_budget_soft_limit_percent{budget="pro.month/consumer=p1"} 1"#))
        #expect(!metricsText.contains(#"percent="99""#))
        // A budget no gateway has asked for yet: no books at the coordinator.
        let large = try #require(usage["pro.per-model/consumer=p1,model=large"])
        #expect(large["source"] as? String == "idle" && large["remaining"] as? Int == 600)

        // p2 has spent nothing anywhere: its quota has no books, so no number is made up.
        let p2 = try await call(port: fleet.proxyPorts[0], path: "/v1/allot/usage", method: .GET, key: "sk-pro-2", body: nil)
        let p2Month = (p2.json?["budgets"] as? [[String: Any]])?.first { $0["budget"] as? String == "pro.month/consumer=p2" }
        #expect(p2Month?["source"] as? String == "idle" && p2Month?["remaining"] is NSNull)
        // Bad callers: no key, an unknown key, another method.
        let anonymous = try await call(port: fleet.proxyPorts[0], path: "/v1/allot/usage", method: .GET, key: nil, body: nil)
        #expect(anonymous.status == 401)
        let unknown = try await call(port: fleet.proxyPorts[0], path: "/v1/allot/usage", method: .GET, key: "sk-guess", body: nil)
        #expect(unknown.status == 401)
        let post = try await call(port: fleet.proxyPorts[0], path: "/v1/allot/usage", method: .POST, key: "sk-pro-1", body: "{}")
        #expect(post.status == 405)
        let metrics = try await call(port: fleet.adminPorts[0], path: "/metrics", method: .GET, key: nil, body: nil)
        #expect(metrics.body.contains(#"allot_gateway_rejected_total{code="usage_method"} 1"#))
        let spelled = try await call(port: fleet.proxyPorts[0], path: "/v1/allot/%75sage", method: .GET, key: "sk-pro-1", body: nil)
        #expect(spelled.status == 400)
        await fleet.stop(remove: true)
    }

    @Test("one line from books at the edges of Int64 (a coordinator's numbers are untrusted): clamped, never a trap")
    func hostileBooks() throws {
        let now = Instant(nanoseconds: 1_800_000_000_000_000_000)
        let quota = try BudgetSpec(id: "q", unit: .tokens, kind: .quota(allowance: 1_000, window: try CalendarWindow(.day)))
        let rate = try BudgetSpec(id: "r", unit: .tokens, kind: .rate(limit: 1, period: .seconds(3_600), burst: .max / 4))
        let permits = try BudgetSpec(id: "c", unit: .requests, kind: .concurrency(limit: 3))
        let dayEnd = try CalendarWindow(.day).window(containing: now).end
        for n in [Int64.min, -1, 0, 1, Int64.max] {
            var b = Allot_V1_BudgetStatus()
            (b.consumed, b.expiredSpent, b.pool, b.outstanding) = (n, n, n, n)
            let q = GatewayCore.line(quota, books: b, here: n, shadow: false, answered: true, now: now)
            #expect((0...1_000).contains(q.remaining ?? -1) && (q.used ?? -1) >= 0)
            #expect(q.reset == dayEnd)
            let r = GatewayCore.line(rate, books: b, here: n, shadow: false, answered: true, now: now)
            #expect((0...(Int64.max / 4)).contains(r.remaining ?? -1) && (r.reset ?? now) >= now)
            let c = GatewayCore.line(permits, books: b, here: n, shadow: false, answered: true, now: now)
            #expect((0...3).contains(c.remaining ?? -1))
        }
        // No coordinator answer: a quota says nothing; an unreachable coordinator is named.
        let q = GatewayCore.line(quota, books: nil, here: 5, shadow: false, answered: false, now: now)
        #expect(q.remaining == nil && q.source == "unreachable")
        let r = GatewayCore.line(rate, books: nil, here: 5, shadow: false, answered: false, now: now)
        #expect(r.remaining == 5)
    }
}
