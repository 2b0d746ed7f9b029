import AllotCore
import Foundation
@testable import AllotGateway
import Synchronization
import Testing

/// Shadow mode in virtual time: one `GatewayCore` whose enforcer an allocator in the test
/// feeds (each poll answered at once, no sockets), driven by one seeded trace. The same trace
/// is replayed enforced and in shadow: the shadow lets every request through and reports,
/// request by request, exactly the denials enforcement made.
@Suite("Shadow mode (virtual time)")
struct ShadowModeTests {
    /// A trial tier: tokens/min (small: it binds) and requests/min; `tier`/`tpm`/`rpm` are the
    /// `shadow:` values written on the tier and on each template (nil: not written).
    static func yaml(tier: Bool? = nil, tpm: Bool? = nil, rpm: Bool? = nil, rpmLimit: Int = 6000) -> String {
        func flag(_ v: Bool?) -> String { v.map { ", shadow: \($0)" } ?? "" }
        return "lease: {ttl: 10s, refresh_interval: 1s}\ntiers:\n  - name: trial\n"
            + (tier.map { "    shadow: \($0)\n" } ?? "")
            + "    templates:\n"
            + "      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 6000, period: 1m, burst: 1500\(flag(tpm))}\n"
            + "      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: \(rpmLimit), period: 1m, burst: 20\(flag(rpm))}\n"
            + "models:\n  - {name: small, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 2048}\n"
            + "gateway:\n  admission_wait: 1ms\n"
    }

    struct Run {
        /// Per request: nil admitted as enforced, "deny:<budget>", or "would:<budget>".
        var decisions: [String?] = []
        var headers = 0
        var metrics = ""
        var auditWouldDeny: [String] = []
        var denied: Int { decisions.filter { $0?.hasPrefix("deny:") == true }.count }
        var wouldDeny: Int { decisions.filter { $0?.hasPrefix("would:") == true }.count }
    }

    static func replay(_ yaml: String, requests: Int = 600) async throws -> Run {
        let config = try GatewayConfig(yaml: yaml)
        let directory = try ConsumerDirectory(
            yaml: "consumers:\n  - {id: t1, team: lab, tenant: acme, tier: trial, key_sha256: \(ConsumerDirectory.hash("sk-t1"))}\n",
            tiers: ["trial"])
        let entry = try #require(directory.lookup(key: "sk-t1"))
        let clock = Mutex(Instant(nanoseconds: 5_000_000_000))
        let enforcer = try SharedEnforcer(settings: EnforcerSettings(node: "g1"))
        let specs = try config.catalog.budgets(for: entry.consumer, route: Route.chat.rawValue, model: "small")
        let alloc = Mutex(try Allocator(settings: config.shared.allocator, budgets: specs, now: clock.withLock { $0 }))
        // The lease client and the coordinator in one step: every message answered at once.
        let pump: @Sendable () -> Void = {
            let now = clock.withLock { $0 }
            let out = enforcer.withEnforcer { e in _ = e.tick(now: now); return e.poll(now: now) }
            for m in out {
                switch m {
                case .acquire(let req):
                    if case .granted(let g) = alloc.withLock({ $0.acquire(req, now: now) }) {
                        enforcer.withEnforcer { _ = $0.receive(g, now: now) }
                    }
                case .release(let rel): _ = alloc.withLock { $0.release(rel, now: now) }
                }
            }
            let pushes = alloc.withLock { a in _ = a.tick(now: now); return a.takePushes() }
            for p in pushes { enforcer.withEnforcer { _ = $0.receive(p.grant, now: now) } }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-shadow-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let audit = try AuditLog(directory: dir, node: "g1")
        let core = try GatewayCore(config: config, consumers: directory, enforcer: enforcer, audit: audit,
                                   poke: pump, clock: { clock.withLock { $0 } })
        var run = Run()
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: UInt64) -> Int64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int64((state >> 33) % n)
        }
        for i in 0..<requests {
            let gap = 5 + next(90)
            clock.withLock { $0 = $0 + .milliseconds(gap) }
            pump()
            // Now and then a bound larger than tokens/min could ever admit (400 when enforced).
            let output = i % 97 == 96 ? 5000 : 20 + next(180)
            let plan = RequestPlan(route: .chat, model: "small", stream: false, inputBound: 30, outputBound: output,
                                   costBound: 0, body: Data())
            switch await core.admit(entry, plan: plan) {
            case .success(let a):
                run.decisions.append(a.wouldDeny.map { "would:" + $0 })
                if let w = a.wouldDeny, a.headers.contains(where: { $0.0 == "x-allot-would-deny" && $0.1 == w }) { run.headers += 1 }
                a.settle(.usage(Usage(input: 30, output: output / 2), status: 200))
            case .failure(let e):
                #expect(e.status == 429 || e.code == "request_exceeds_budget", "\(e.code)")
                run.decisions.append("deny:" + (e.budget ?? e.code))
            }
        }
        run.metrics = core.metrics.render()
        try audit.close()
        for f in AuditLog.files(in: dir) {
            for line in try Data(contentsOf: f).split(separator: UInt8(ascii: "\n")) {
                if let w = try JSONDecoder().decode(AuditRecord.self, from: Data(line)).wouldDeny { run.auditWouldDeny.append(w) }
            }
        }
        return run
    }

    @Test("a replayed trace in shadow: every request passes, and would-deny equals the denials enforced, request by request",
          .timeLimit(.minutes(1)))
    func sameDecisions() async throws {
        let enforced = try await Self.replay(Self.yaml())
        let shadow = try await Self.replay(Self.yaml(tier: true))
        print("shadow mode replay: enforced \(enforced.denied) of 600 denied; shadow \(shadow.wouldDeny) would-deny, \(shadow.denied) denied")
        #expect(enforced.denied >= 50, "the trace must make tokens/min bind (denied \(enforced.denied) of 600)")
        #expect(enforced.wouldDeny == 0 && shadow.denied == 0)
        #expect(enforced.decisions.filter { $0 == "deny:request_exceeds_budget" }.isEmpty) // named by budget
        #expect(shadow.decisions.filter { $0 == nil }.count + shadow.wouldDeny == 600)
        // Request by request: the shadow names the budget enforcement denied with.
        let reported = shadow.decisions.map { $0?.replacingOccurrences(of: "would:", with: "deny:") }
        let first = zip(reported, enforced.decisions).enumerated().first { $0.element.0 != $0.element.1 }
        #expect(reported.count == enforced.decisions.count && first == nil,
                "request \(first?.offset ?? -1): shadow \(String(describing: first?.element.0)), enforced \(String(describing: first?.element.1))")
        #expect(shadow.headers == shadow.wouldDeny)
        #expect(shadow.auditWouldDeny.count == shadow.wouldDeny)
        let budget = "trial.tpm/consumer=t1"
        #expect(Set(shadow.auditWouldDeny) == [budget])
        let line = shadow.metrics.split(separator: "\n").first { $0.hasPrefix("allot_gateway_would_deny_total{") && $0.contains(budget) }
        #expect(line?.split(separator: " ").last.flatMap { Int($0) } == shadow.wouldDeny)
        #expect(!enforced.metrics.contains("allot_gateway_would_deny_total{"))
    }

    @Test("a shadow template beside an enforced one: the enforced budget still denies, the shadow one never does",
          .timeLimit(.minutes(1)))
    func mixed() async throws {
        // requests/min small enough to bind too, and enforced (the tier's shadow overridden).
        let run = try await Self.replay(Self.yaml(tier: true, rpm: false, rpmLimit: 300))
        let denials = run.decisions.compactMap { $0 }.filter { $0.hasPrefix("deny:") }
        #expect(!denials.isEmpty && denials.allSatisfy { $0 == "deny:trial.rpm/consumer=t1" })
        #expect(run.wouldDeny > 0 && run.decisions.allSatisfy { $0 == nil || $0 == "would:trial.tpm/consumer=t1" || $0!.hasPrefix("deny:") })
    }

    @Test("bounds at the edge of Int64 on a shadow tier: let through as would-deny, never a trap or a 400")
    func extremeBounds() async throws {
        let config = try GatewayConfig(yaml: Self.yaml(tier: true))
        let directory = try ConsumerDirectory(
            yaml: "consumers:\n  - {id: t1, team: lab, tenant: acme, tier: trial, key_sha256: \(ConsumerDirectory.hash("sk-t1"))}\n",
            tiers: ["trial"])
        let entry = try #require(directory.lookup(key: "sk-t1"))
        let enforcer = try SharedEnforcer(settings: EnforcerSettings(node: "g1"))
        let core = try GatewayCore(config: config, consumers: directory, enforcer: enforcer, audit: nil,
                                   clock: { Instant(nanoseconds: 5_000_000_000) })
        for (input, output) in [(Int64.max, Int64.max), (0, Int64.max), (Int64.max - 1, 1)] {
            let plan = RequestPlan(route: .chat, model: "small", stream: false, inputBound: input, outputBound: output,
                                   costBound: Int64.max, body: Data())
            guard case .success(let a) = await core.admit(entry, plan: plan) else {
                Issue.record("bound \(input)+\(output) refused on a shadow tier"); continue
            }
            #expect(a.wouldDeny == "trial.tpm/consumer=t1")
            a.settle(.usage(Usage(input: Int64.max, output: Int64.max), status: 200))
        }
    }

    @Test("shadow in the file: on a budget, a template or a tier; a template's false wins; bad values are named")
    func config() throws {
        let c = try GatewayConfig(yaml: Self.yaml(tier: true, rpm: false))
        #expect(c.shared.isShadow(BudgetID(template: "trial.tpm", key: BudgetKey([.consumer: "t1"]))))
        #expect(!c.shared.isShadow(BudgetID(template: "trial.rpm", key: BudgetKey([.consumer: "t1"]))))
        let explicit = Self.yaml() + "budgets:\n  - {id: global-rpm, kind: rate, limit: 10, period: 1s, shadow: true}\n"
        let e = try GatewayConfig(yaml: explicit)
        #expect(e.shared.isShadow(BudgetID("global-rpm")) && !e.shared.isShadow(BudgetID("trial.tpm/consumer=t1")))
        // An explicit budget says it itself, whatever its template says.
        let vip = Self.yaml(tier: true) + "budgets:\n  - {id: trial.tpm/consumer=vip, unit: tokens, kind: rate, limit: 60000, period: 1m}\n"
        let v = try GatewayConfig(yaml: vip)
        #expect(!v.shared.isShadow(BudgetID("trial.tpm/consumer=vip")) && v.shared.isShadow(BudgetID("trial.tpm/consumer=t1")))
        #expect(!v.shared.isShadow(BudgetID("global-rpm/x")))
        func message(_ yaml: String) -> String {
            do { _ = try GatewayConfig(yaml: yaml); return "accepted" } catch { return "\(error)" }
        }
        #expect(message(Self.yaml().replacingOccurrences(of: "burst: 20}", with: "burst: 20, shadow: sometimes}")).contains("shadow"))
        #expect(message(Self.yaml().replacingOccurrences(of: "burst: 20}", with: "burst: 20, shadows: true}")).contains("templates[1].shadows: unknown key"))
    }
}
