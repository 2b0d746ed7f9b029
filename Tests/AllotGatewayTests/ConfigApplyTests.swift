import AllotConfig
import AllotCore
import AllotDemo
@testable import AllotGateway
import AllotSimulator
import AllotTransport
import Logging
import NIOPosix
import Foundation
import Testing

/// Limits changed at run time (issue 17, must-shows 1 and 6): `allot config apply` against a
/// coordinator with a ledger, under load from three gateways.
@Suite("Configuration applied at run time", .serialized)
struct ConfigApplyTests {
    /// The shared test file with the pro tier's tokens/min at `tpm` (its other limits out of the way).
    static func yaml(tpm: Int64) -> String {
        testConfigYAML
            .replacingOccurrences(of: "{name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 20000, period: 1m}",
                                  with: "{name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: \(tpm), period: 1m}")
            .replacingOccurrences(of: "allowance: 15000", with: "allowance: 100000000")
            .replacingOccurrences(of: "limit: 600, period: 1m", with: "limit: 600000, period: 1m")
    }

    static func tpm(_ limit: Int64) throws -> BudgetSpec {
        try BudgetSpec(id: "pro.tpm/consumer=p1", unit: .tokens, kind: .rate(limit: limit, period: .seconds(60), burst: limit))
    }

    /// Runs the CLI off the cooperative threads (it waits for a process).
    static func allot(_ args: [String], _ fleet: LocalFleet) async -> (status: Int32, output: String) {
        let certs = fleet.directory.appendingPathComponent("certs").path
        let all = args + ["--coordinator", "127.0.0.1:\(fleet.coordinatorPort)", "--tls-dir", certs]
        return await withCheckedContinuation { c in
            Thread { c.resume(returning: (try? runAllot(all)) ?? (-1, "cannot run allot")) }.start()
        }
    }

    @Test("real time, 3 gateways under steady load: a tier's tokens/min lowered 10× and raised back with allot config apply stays within burst + rate·T of the limit in force (exact replay); the lowered limit is in force on every node well within one lease TTL")
    func lowerAndRaiseUnderLoad() async throws {
        let (base, consumers) = try testConfig(yaml: Self.yaml(tpm: 60_000))
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent("allot-cfg-\(UUID().uuidString.prefix(8)).db").path
        let events = EventLog()
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 3, observer: events.observer, ledgerPath: ledger)
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .admin, name: "ops")
        let low = fleet.directory.appendingPathComponent("low.yaml"), high = fleet.directory.appendingPathComponent("high.yaml")
        try Self.yaml(tpm: 6_000).write(to: low, atomically: true, encoding: .utf8)
        try Self.yaml(tpm: 60_000).write(to: high, atomically: true, encoding: .utf8)
        let id: BudgetID = "pro.tpm/consumer=p1"
        let start = ContinuousClock.now
        let loadEnd = start + .seconds(7)
        let load = Task { () -> [Int: Int] in
            try await withThrowingTaskGroup(of: [Int].self) { group in
                for node in 0..<3 {
                    for _ in 0..<2 {
                        let port = fleet.proxyPorts[node]
                        group.addTask {
                            var out: [Int] = []
                            while ContinuousClock.now < loadEnd {
                                let r = try await call(port: port, key: "sk-pro-1", body: chatBody(model: "small", maxTokens: 200),
                                                       headers: [("x-mock-completion-tokens", "150"), ("x-mock-latency-ms", "10")])
                                out.append(r.status)
                                if r.status == 429 { try await Task.sleep(for: .milliseconds(10)) }
                            }
                            return out
                        }
                    }
                }
                var statuses: [Int: Int] = [:]
                for try await list in group { for s in list { statuses[s, default: 0] += 1 } }
                return statuses
            }
        }
        // Lowered 10× two seconds in. Watched every millisecond: when the coordinator took
        // the version, and when no node could still enforce the old terms (in force).
        let watch = Task { () -> (taken: Instant, inForce: Instant)? in
            var taken: Instant?
            while ContinuousClock.now < loadEnd {
                let (version, draining) = (fleet.coordinator.config.version, fleet.coordinator.machine { $0.allocator.isDraining(id) })
                if version >= 1 && taken == nil { taken = WallClock.now() }
                if let taken, !draining { return (taken, WallClock.now()) }
                try? await Task.sleep(for: .milliseconds(1))
            }
            return nil
        }
        try await Task.sleep(until: start + .seconds(2))
        let lowered = await Self.allot(["config", "apply", "-f", low.path], fleet)
        #expect(lowered.status == 0, "\(lowered.output)")
        #expect(lowered.output.contains("- ") && lowered.output.contains("limit: 6000"), "the diff: \(lowered.output)")
        let (taken, inForce) = try #require(await watch.value)
        let lag = inForce - taken
        // Raised back at 4.5 s: counted from just before the command (in force at once).
        try await Task.sleep(until: start + .milliseconds(4_500))
        let raisedAt = WallClock.now()
        let raised = await Self.allot(["config", "apply", "-f", high.path], fleet)
        #expect(raised.status == 0, "\(raised.output)")
        let raisedDone = WallClock.now()
        let statuses = try await load.value
        // Must-show 6 through the command: a bad file changes nothing and names the field;
        // history lists both versions with author and diff; export gives the version in force.
        let bad = fleet.directory.appendingPathComponent("bad.yaml")
        try Self.yaml(tpm: 6_000).replacingOccurrences(of: "period: 1m, burst: 5}", with: "period: 1m, brust: 5}")
            .write(to: bad, atomically: true, encoding: .utf8)
        let refused = await Self.allot(["config", "apply", "-f", bad.path], fleet)
        #expect(refused.status != 0 && refused.output.contains("tiers[0].templates[0].brust") && refused.output.contains("nothing was applied"),
                "\(refused.output)")
        #expect(fleet.coordinator.config.version == 2)
        let history = await Self.allot(["config", "history"], fleet)
        #expect(history.output.contains("version 2") && history.output.contains("version 1")
                && history.output.components(separatedBy: "by ops").count == 3 && history.output.contains("-     limit: 6000") && history.output.contains("+     limit: 60000"), "\(history.output)")
        let export = await Self.allot(["config", "export"], fleet)
        #expect(export.output.contains("version 2") && export.output.contains("limit: 60000") && !export.output.contains("gateway:"), "\(export.output)")
        await fleet.stop()

        #expect(Set(statuses.keys).isSubset(of: [200, 429]), "\(statuses)")
        #expect(lag < base.shared.allocator.leaseTTL, "the lowered limit took \(lag) to be in force on every node")
        print("ConfigApplyTests: lowered limit in force on every node \(lag) after the coordinator took the version; lease TTL \(base.shared.allocator.leaseTTL)")
        let admits = events.all.filter { $0.consumer == "p1" && $0.kind == .admit }
        // The exact replay: 60,000/min until the lowered terms were in force, 6,000/min then,
        // 60,000/min again from the raise.
        let checker = BudgetChecker.replay(events.all, consumers: ["p1"], spec: try Self.tpm(60_000),
                                           changes: [(inForce, try Self.tpm(6_000)), (raisedAt, try Self.tpm(60_000))])
        #expect(checker.excess <= 0, "\(fleetSummary(events.all))")
        // The phases really bound: refused requests, and few admitted while lowered.
        #expect(statuses[429, default: 0] > 0 && statuses[200, default: 0] > 20)
        let whileLow = admits.filter { $0.time >= inForce && $0.time < raisedAt }.count
        let afterRaise = admits.filter { $0.time >= raisedDone }.count
        #expect(afterRaise > whileLow, "lowered \(whileLow) admissions, after the raise \(afterRaise)")
        #expect(fleet.coordinator.allocatorStatus(id)?.kind == (try Self.tpm(60_000)).kind)
    }

    @Test("real time, 2 gateways: a model added, a tier removed and a template deleted by allot config apply reach every gateway without a restart (the model served within 1 s; the tier's consumers refused with 403 naming the version; the deleted template's leases withdrawn and its tier refused with 403 naming it within 1 s, served once a version allows the deletion); a gateway restarted with no coordinator keeps the policy from its cache")
    func gatewaysTakeThePolicy() async throws {
        let (base, consumers) = try testConfig { $0.directoryCache = "set per gateway" }
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent("allot-pol-\(UUID().uuidString.prefix(8)).db").path
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 2, ledgerPath: ledger)
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .admin, name: "ops")
        let xl = chatBody(model: "xl", maxTokens: 20)
        for port in fleet.proxyPorts {
            let r = try await call(port: port, key: "sk-pro-1", body: xl)
            #expect(r.status == 400 || r.status == 404, "a model nobody configured: \(r.status) \(r.body)")
            #expect(try await call(port: port, key: "sk-free-1", body: chatBody(maxTokens: 20)).status == 200)
        }
        let freeTier = """
              - name: free
                templates:
                  - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m, burst: 5}
                  - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 30000, period: 1m}
                entitlements: {models: [small], routes: [chat, embeddings], max_prompt_bytes: 4096, max_tokens: 256}

            """
        #expect(testConfigYAML.contains(freeTier))
        let agentTPM = "      - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: 1000000, period: 1m}\n"
        #expect(testConfigYAML.contains(agentTPM))
        let policy = testConfigYAML.replacingOccurrences(of: freeTier, with: "").replacingOccurrences(of: agentTPM, with: "")
            .replacingOccurrences(of: "models:\n", with: "models:\n  - {name: xl, input_usd_per_mtok: 1, output_usd_per_mtok: 2, max_output_tokens: 1000}\n")
        let file = fleet.directory.appendingPathComponent("policy.yaml")
        try policy.write(to: file, atomically: true, encoding: .utf8)
        let applied = await Self.allot(["config", "apply", "-f", file.path], fleet)
        // (This coordinator was not started from a file: the first version is diffed against nothing.)
        #expect(applied.status == 0 && applied.output.contains("models xl") && !applied.output.contains("tiers free"), "\(applied.output)")
        let start = ContinuousClock.now
        var pending = Set(fleet.proxyPorts)
        while !pending.isEmpty && ContinuousClock.now - start < .seconds(5) {
            for p in pending.sorted() where try await call(port: p, key: "sk-pro-1", body: xl).status == 200 { pending.remove(p) }
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        }
        let took = ContinuousClock.now - start
        print("ConfigApplyTests: a model added by allot config apply served by every gateway \(took) after the command returned")
        #expect(pending.isEmpty && took < .seconds(1), "served after \(took); still not on \(pending)")
        for (i, port) in fleet.proxyPorts.enumerated() {
            let r = try await call(port: port, key: "sk-free-1", body: chatBody(maxTokens: 20))
            #expect(r.status == 403 && r.errorCode == "tier_removed" && r.body.contains("configuration version 1"), "\(r.status) \(r.body)")
            #expect(fleet.gateways[i].core.policyVersion == 1)
            // A template removed from a tier: requests are no longer charged to it.
            let a = try await call(port: port, key: "sk-agent-1", body: chatBody(maxTokens: 20))
            #expect(a.status == 200, "\(a.status) \(a.body)")
        }
        // Version 2 deletes the agent tier's concurrency template (deletions: refuse, the
        // default): the lease each gateway holds is withdrawn, and the tier's requests are
        // refused with 403 naming the template and the version, on every gateway within 1 s.
        let inflight = "      - {name: inflight, scope: [consumer], kind: concurrency, limit: 3}\n"
        #expect(policy.contains(inflight))
        let inflightID = BudgetID("agent.inflight/consumer=a1")
        for g in fleet.gateways {
            // A lease on every gateway (its free permits may have been recalled for the other).
            let lease = g.core.enforcer.withEnforcer { e in e.handle(for: inflightID).map { e.status($0).leaseID } }
            #expect((lease ?? 0) != 0, "a permit lease held before: \(String(describing: lease))")
        }
        try policy.replacingOccurrences(of: inflight, with: "").write(to: file, atomically: true, encoding: .utf8)
        let deleted = await Self.allot(["config", "apply", "-f", file.path], fleet)
        #expect(deleted.status == 0 && deleted.output.contains("+removed"), "\(deleted.output)")
        let deletedAt = ContinuousClock.now
        pending = Set(fleet.proxyPorts)
        while !pending.isEmpty && ContinuousClock.now - deletedAt < .seconds(5) {
            for p in pending.sorted() {
                let r = try await call(port: p, key: "sk-agent-1", body: chatBody(maxTokens: 20))
                if r.status == 403 && r.errorCode == "budget_removed" && r.body.contains("agent.inflight") && r.body.contains("version 2") { pending.remove(p) }
            }
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(pending.isEmpty && ContinuousClock.now - deletedAt < .seconds(1), "still served on \(pending)")
        for g in fleet.gateways {
            let held = g.core.enforcer.withEnforcer { e in e.handle(for: inflightID).map { e.status($0).available } }
            #expect((held ?? 0) <= 0, "the lease withdrawn: \(String(describing: held)) permits left")
        }
        // Version 3 accepts the deletion (deletions: allow): served, no longer charged to it.
        try (policy.replacingOccurrences(of: inflight, with: "") + "\ndeletions: allow\n").write(to: file, atomically: true, encoding: .utf8)
        #expect(await Self.allot(["config", "apply", "-f", file.path], fleet).status == 0)
        let allowedAt = ContinuousClock.now
        pending = Set(fleet.proxyPorts)
        while !pending.isEmpty && ContinuousClock.now - allowedAt < .seconds(5) {
            for p in pending.sorted() where try await call(port: p, key: "sk-agent-1", body: chatBody(maxTokens: 20)).status == 200 { pending.remove(p) }
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(pending.isEmpty, "refused still on \(pending)")

        // A gateway whose file has only its own settings: tiers, models and keys all come from
        // the coordinators.
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .node, name: "gw-bare")
        var bare = try GatewayConfig(yaml: "gateway:\n  consumers: \"\"\n  upstream_timeout: 1s\n  admission_wait: 300ms\n")
        bare.name = "gw-bare"
        bare.upstream = URL(string: "http://127.0.0.1:\(try #require(fleet.mockPort))")!
        bare.auditDirectory = nil
        bare.directoryCache = fleet.directory.appendingPathComponent("directory-bare.json").path
        let (bareService, barePort, bareTask) = try await startGateway(bare, consumers: ConsumerDirectory(entries: []), beside: fleet)
        let created = await Self.allot(["keys", "create", "--consumer", "zed", "--tier", "pro"], fleet)
        let key = try #require(created.output.split(separator: "\n").map(String.init).first { $0.hasPrefix("sk-allot-") })
        let bareStart = ContinuousClock.now
        var bareStatus = 0
        while ContinuousClock.now - bareStart < .seconds(5) {
            bareStatus = try await call(port: barePort, key: key, body: xl).status
            if bareStatus == 200 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(bareStatus == 200 && bareService.core.policyVersion == 3, "a bare gateway: \(bareStatus)")
        bareTask.cancel()
        _ = await bareTask.result

        // Restart gw-1 with no coordinator reachable: its cache still has the policy.
        await fleet.stop()
        let (restarted, port, task) = try await restartGateway1(base, consumers: consumers, beside: fleet)
        #expect(restarted.core.policyVersion == 3 && restarted.core.config.models["xl"] != nil)
        let r = try await call(port: port, key: "sk-free-1", body: chatBody(maxTokens: 20))
        #expect(r.status == 403 && r.errorCode == "tier_removed", "\(r.status) \(r.body)")
        task.cancel()
        _ = await task.result
        try? FileManager.default.removeItem(atPath: ledger)
    }

    @Test("a gateway takes only newer versions, keeps its models when a version has none, and keeps the version in force when one cannot be read; a removed tier or template is refused, a template removed under deletions: allow is no longer charged")
    func gatewaySide() async throws {
        let (config, consumers) = try testConfig()
        let core = try GatewayCore(config: config, consumers: consumers, enforcer: try SharedEnforcer(settings: EnforcerSettings(node: "gw")), audit: nil)
        let models = Set(config.models.keys)
        // (Without the free tier: its entitlements name a model, which a version must then have.)
        let withoutFreeTier = testConfigYAML.components(separatedBy: "  - name: pro\n")
        let noModels = try PolicyDocument(file: "tiers:\n  - name: pro\n" + withoutFreeTier[1].components(separatedBy: "models:\n").first! + "\n")
        #expect(try core.apply(policy: noModels.yaml, version: 2))
        #expect(Set(core.config.models.keys) == models && core.policyVersion == 2)
        let onlyXL = try PolicyDocument(file: Self.yaml(tpm: 6_000).replacingOccurrences(of: "models: [small], ", with: "")
            .replacingOccurrences(of: "  - {name: small,", with: "  - {name: xl,"))
        #expect(try core.apply(policy: onlyXL.yaml, version: 3))
        #expect(core.config.models["xl"] != nil && core.config.models["small"] == nil)
        #expect(try core.apply(policy: noModels.yaml, version: 1) == false, "older than the one in force")
        #expect(throws: AllotError.self) { try core.apply(policy: "tiers: [", version: 4) }
        #expect(core.policyVersion == 3 && core.config.models["xl"] != nil)
        // A consumer of a tier version 5 no longer has: 403 naming it.
        let withoutFree = try PolicyDocument(file: Self.yaml(tpm: 6_000).replacingOccurrences(of: "  - name: free\n", with: "  - name: gratis\n"))
        #expect(try core.apply(policy: withoutFree.yaml, version: 5))
        let free = try core.authenticate(authorization: "Bearer sk-free-1")
        #expect(throws: GatewayError.self) { try core.resolve(free, route: .chat, model: "small") }
        // A template removed (the coordinator lists it in the version): under deletions:
        // refuse the tier's consumers get 403 naming it and the version; under allow they are
        // served, no longer charged to it.
        let base = Self.yaml(tpm: 6_000).replacingOccurrences(of: "  - name: free\n", with: "  - name: gratis\n")
        let perRoute = "      - {name: per-route, scope: [consumer, route], unit: requests, kind: rate, limit: 600000, period: 1m}\n"
        #expect(base.contains(perRoute))
        let refused = try PolicyDocument(file: base.replacingOccurrences(of: perRoute, with: ""))
            .recordingRemovals(from: PolicyDocument(file: base).yaml, version: 6)
        #expect(try core.apply(policy: refused.yaml, version: 6))
        let p1 = try core.authenticate(authorization: "Bearer sk-pro-1")
        #expect { try core.resolve(p1, route: .chat, model: "small") } throws: { e in
            let g = e as? GatewayError
            return g?.status == 403 && g?.code == "budget_removed" && g?.message.contains("pro.per-route") == true && g?.message.contains("version 6") == true
        }
        await #expect(throws: GatewayError.self) { _ = try await core.usage(p1) }
        let allowed = try PolicyDocument(file: base.replacingOccurrences(of: perRoute, with: "") + "\ndeletions: allow\n")
            .recordingRemovals(from: refused.yaml, version: 7)
        #expect(try core.apply(policy: allowed.yaml, version: 7))
        // (Under refuse the same resolve threw budget_removed above.)
        let served = try core.resolve(p1, route: .chat, model: "small")
        #expect(served.specs.contains { $0.id.rawValue.hasPrefix("pro.tpm") }, "\(served.specs.map(\.id))")
    }
}
