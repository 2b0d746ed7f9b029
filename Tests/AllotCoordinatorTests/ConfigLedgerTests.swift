import AllotConfig
import AllotCoordination
import AllotCore
import AllotTransport
@testable import AllotCoordinator
import Foundation
import Testing

/// The policy in the ledger (issue 17, must-show 6): `allot config apply` makes versions with
/// author and diff; a bad file changes nothing and names the field; every coordinator on the
/// ledger puts the newest version in force, a restarted one too.
enum ConfigLedgerChecks {
    static func file(tpm: Int64, extra: String = "") -> String {
        """
        coordinator: {name: c1}
        lease: {ttl: 2s, refresh_interval: 200ms}
        budgets:
          - {id: global-rps, unit: requests, kind: rate, limit: 100, period: 1s\(extra)}
        tiers:
          - name: pro
            templates:
              - {name: tpm, scope: [consumer], unit: tokens, kind: rate, limit: \(tpm), period: 1m}
        """
    }

    static func core(_ yaml: String, _ store: any LedgerStore) throws -> CoordinatorCore {
        let cfg = try CoordinatorConfig(yaml: yaml)
        return try CoordinatorCore(settings: cfg.core, budgets: cfg.budgets, ledger: LedgerWriter(store: store), now: WallClock.now())
    }

    /// The terms of `consumer`'s tpm budget on `core` (made on first use).
    static func tpm(_ core: CoordinatorCore, _ consumer: String) -> BudgetKind? {
        let id = BudgetID("pro.tpm/consumer=\(consumer)")
        return core.machine { m in
            _ = m.acquire([AcquireRequest(requestID: 1, node: "n", budget: id, want: 1)], from: "n", now: WallClock.now())
            return m.allocator.spec(id)?.kind
        }
    }

    /// Two coordinators `a` and `b` on one ledger (two clients of it).
    static func versions(_ sa: any LedgerStore, _ sb: any LedgerStore) async throws {
        let a = try core(file(tpm: 60_000), sa), b = try core(file(tpm: 60_000), sb)
        try await a.config.refresh(a)
        try await b.config.refresh(b)
        let start = a.config.version
        // Bad files: nothing changes, the field is named.
        for (bad, field) in [(file(tpm: -5), "tiers[0].templates[0]"), (file(tpm: 10, extra: ", brust: 3"), "budgets[0].brust"),
                             ("budgets: [{id: x, unit: tokens, kind: rate, limit: 1, period: soon}]", "budgets[0].period"),
                             ("tiers: {pro: 1}", "tiers"), ("budgets: [", "YAML"),
                             (file(tpm: 60_000).replacingOccurrences(of: "period: 1m", with: "period: 1h"), "tiers[0].templates[0]: pro.tpm was a rate per")] {
            do {
                _ = try await a.config.apply(file: bad, author: "ops", dryRun: false, core: a)
                Issue.record("applied a bad file: \(bad)")
            } catch let e as AllotError {
                #expect(e.message.contains(field), "\(e.message) should name \(field)")
            }
        }
        let unchanged = try await sa.head(of: .config)?.version ?? 0
        #expect(a.config.version == start && unchanged == start)
        // A dry run says what would change and changes nothing.
        let dry = try await a.config.apply(file: file(tpm: 6_000), author: "ops", dryRun: true, core: a)
        #expect(dry.diff.contains("+ ") && dry.diff.contains("6000") && a.config.version == start)
        // Applied: a version with author and diff, in force here at once, on `b` when it reads.
        let applied = try await a.config.apply(file: file(tpm: 6_000), author: "ops", dryRun: false, core: a)
        #expect(applied.version == start + 1 && applied.summary.contains("tiers pro"))
        #expect(tpm(a, "alice")?.ceiling == 6_000)
        #expect(tpm(b, "alice")?.ceiling == 60_000)
        try await b.config.refresh(b)
        #expect(b.config.version == start + 1 && tpm(b, "bob")?.ceiling == 6_000 && tpm(b, "alice")?.ceiling == 6_000)
        let head = try #require(try await sa.history(of: .config, limit: 1).first)
        #expect(head.author == "ops" && head.change.contains("- ") && head.change.contains("+ ") && head.change.contains("limit: 6000"))
        // The same file again: nothing to apply.
        await #expect(throws: AllotError.self) { _ = try await a.config.apply(file: file(tpm: 6_000), author: "ops", dryRun: false, core: a) }
        // Both at once: compare-and-set keeps both versions, in some order.
        async let x = a.config.apply(file: file(tpm: 7_000), author: "a", dryRun: false, core: a)
        async let y = b.config.apply(file: file(tpm: 8_000, extra: ", burst: 200"), author: "b", dryRun: false, core: b)
        let (vx, vy) = try await (x.version, y.version)
        #expect(Set([vx, vy]) == [start + 2, start + 3])
        try await a.config.refresh(a)
        try await b.config.refresh(b)
        #expect(a.config.version == start + 3 && b.config.version == start + 3 && a.config.document == b.config.document)
        // A coordinator started later from its (old) file takes the ledger's newest version.
        let c = try core(file(tpm: 60_000), sa)
        try await c.config.refresh(c)
        #expect(c.config.version == start + 3 && tpm(c, "carol")?.ceiling == tpm(a, "carol")?.ceiling)
        #expect(c.machine { $0.allocator.spec("global-rps")?.kind } == a.machine { $0.allocator.spec("global-rps")?.kind })
    }
}

@Suite("Policy versions in the ledger", .serialized)
struct ConfigLedgerTests {
    @Test("SQLite: bad files change nothing and name the field; dry run; versions with author and diff; two coordinators; a restart takes the newest")
    func sqlite() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("allot-cfgledger-\(UUID().uuidString.prefix(8)).db").path
        let a = try SQLiteLedger.open(path: path), b = try SQLiteLedger.open(path: path)
        try await a.migrate()
        try await ConfigLedgerChecks.versions(a, b)
        await a.close()
        await b.close()
        try? FileManager.default.removeItem(atPath: path)
        // Without a ledger there are no versions to make.
        let none = try CoordinatorCore(settings: .init(), budgets: [try BudgetSpec(id: "r", unit: .requests, kind: .rate(limit: 1, period: .seconds(1), burst: 1))], now: WallClock.now())
        await #expect(throws: AllotError.self) { _ = try await none.config.apply(file: ConfigLedgerChecks.file(tpm: 1), author: "ops", dryRun: false, core: none) }
    }

    @Test("PostgreSQL: the same, two clients on one database", .enabled(if: TestPostgres.enabled))
    func postgres() async throws {
        let a = try TestPostgres.ledger(), b = try TestPostgres.ledger()
        try await a.migrate()
        try await ConfigLedgerChecks.versions(a, b)
        await a.close()
        await b.close()
    }

    @Test("the line diff: changed lines with one line of context; a huge change is bounded")
    func diff() throws {
        let old = try PolicyDocument(file: ConfigLedgerChecks.file(tpm: 60_000))
        let new = try PolicyDocument(file: ConfigLedgerChecks.file(tpm: 6_000))
        let d = new.diff(from: old.yaml)
        #expect(d.split(separator: "\n").filter { $0.hasPrefix("- ") || $0.hasPrefix("+ ") }.count == 2, "\(d)")
        #expect(d.contains("- ") && d.contains("limit: 60000") && d.contains("limit: 6000"))
        #expect(new.diff(from: new.yaml).isEmpty)
        #expect(new.summary(from: old.yaml) == "~tiers pro")
        let many = (0..<3_000).map { "l\($0)" }.joined(separator: "\n")
        let lines = new.diff(from: many).split(separator: "\n")
        #expect(lines.count >= 3_000 && lines.count < 3_100)
        // Past 4 million line pairs: removed and added whole, no table of that size.
        var big = "budgets:\n"
        for i in 0..<2_100 { big += "  - {id: b\(i), unit: requests, kind: rate, limit: \(i + 1), period: 1s}\n" }
        let bigDoc = try PolicyDocument(file: big)
        let other = (0..<2_100 * 7).map { "x\($0)" }.joined(separator: "\n")
        let whole = bigDoc.diff(from: other).split(separator: "\n")
        #expect(whole.filter { $0.hasPrefix("- ") }.count == 2_100 * 7 && whole.filter { $0.hasPrefix("+ ") }.count == bigDoc.yaml.split(separator: "\n", omittingEmptySubsequences: false).count)
    }

    @Test("the canonical form keeps every value as written (no round trip through typed values) and ignores style")
    func canonical() throws {
        let a = try PolicyDocument(file: "budgets:\n  - {id: '007', unit: requests, kind: rate, limit: 10, period: 1s}\ntiers:\n  - name: off\n    templates: [{name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m}]\nmodels:\n  - {name: m, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}\n")
        let b = try PolicyDocument(file: "models:\n- name: m\n  output_usd_per_mtok: 0.6\n  input_usd_per_mtok: 0.15\ntiers:\n- templates:\n  - {unit: requests, name: rpm, scope: [consumer], kind: rate, limit: 5, period: 1m}\n  name: off\nbudgets:\n- {kind: rate, id: '007', unit: requests, limit: 10, period: 1s}\n")
        #expect(a == b, "\(a.yaml)\n---\n\(b.yaml)")
        let d = try a.deployment()
        #expect(d.budgets.first?.id == "007" && d.tiers.first?.name == "off")
        #expect(a.yaml.contains("0.15") && !a.yaml.contains("e-1"))
        let unquoted = try PolicyDocument(file: "budgets:\n  - {id: 007, unit: requests, kind: rate, limit: 10, period: 1s}\n")
        #expect(try unquoted.deployment().budgets.first?.id == "007", "\(unquoted.yaml)")
    }

    /// A policy with the pro tier's templates `templates` (tpm, rpm, …) and a free tier.
    static func policy(_ templates: [String], deletions: String? = nil, extra: String = "") -> String {
        let list = templates.map { "      - {name: \($0), scope: [consumer], unit: requests, kind: rate, limit: 100, period: 1m}" }
        return "tiers:\n  - name: pro\n    templates:\n" + list.joined(separator: "\n")
            + "\n  - name: free\n    templates:\n      - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 5, period: 1m}\n"
            + (deletions.map { "deletions: \($0)\n" } ?? "") + extra
    }

    @Test("deleting a template: the version records it (what every gateway decides by), keeps it with the version that removed it until restored or a version says allow; a removed tier or shadow template is not listed; a file's own list is replaced; a template restored in an exported file is restored")
    func removals() throws {
        func removed(_ doc: PolicyDocument) throws -> [String: Int64] { try doc.deployment().removedTemplates }
        let v1 = try PolicyDocument(file: Self.policy(["tpm", "rpm", "day"])).recordingRemovals(from: "", version: 1)
        #expect(try removed(v1).isEmpty)
        // v2 drops rpm: listed with version 2, and the summary says so.
        let v2 = try PolicyDocument(file: Self.policy(["tpm", "day"])).recordingRemovals(from: v1.yaml, version: 2)
        #expect(try removed(v2) == ["pro.rpm": 2] && v2.summary(from: v1.yaml).contains("+removed"), "\(v2.yaml)")
        #expect(try v2.deployment().deletions == .refuse)
        // v3 drops day too, and claims rpm was removed in version 1: the coordinator's list wins.
        let v3 = try PolicyDocument(file: Self.policy(["tpm"], extra: "removed:\n  - {template: pro.rpm, version: 1}\n"))
            .recordingRemovals(from: v2.yaml, version: 3)
        #expect(try removed(v3) == ["pro.rpm": 2, "pro.day": 3], "\(v3.yaml)")
        // The same file again: the same document (nothing to apply).
        #expect(try PolicyDocument(file: Self.policy(["tpm"])).recordingRemovals(from: v3.yaml, version: 4) == v3)
        // rpm restored: it leaves the list.
        let v4 = try PolicyDocument(file: Self.policy(["tpm", "rpm"])).recordingRemovals(from: v3.yaml, version: 4)
        #expect(try removed(v4) == ["pro.day": 3])
        // The whole free tier removed: not listed (its consumers are refused as tier_removed).
        let v5 = try PolicyDocument(file: Self.policy(["tpm", "rpm"]).components(separatedBy: "  - name: free")[0])
            .recordingRemovals(from: v4.yaml, version: 5)
        #expect(try removed(v5) == ["pro.day": 3], "\(v5.yaml)")
        // deletions: allow accepts the removals: the list empties.
        let v6 = try PolicyDocument(file: Self.policy(["tpm"], deletions: "allow")).recordingRemovals(from: v4.yaml, version: 6)
        #expect(try removed(v6).isEmpty && v6.deployment().deletions == .allow && !v6.yaml.contains("removed"))
        // Hand-written lists are checked.
        // An exported version with a listed template restored by hand: restored, not refused.
        let restored = try PolicyDocument(file: Self.policy(["tpm", "day"], extra: "removed:\n  - {template: pro.day, version: 3}\n"))
        #expect(try removed(restored).isEmpty && removed(restored.recordingRemovals(from: v3.yaml, version: 7)) == ["pro.rpm": 2])
        // A shadow template removed refuses nothing: not listed.
        let shadowed = try PolicyDocument(file: Self.policy(["tpm"]).replacingOccurrences(of: "limit: 100, period: 1m}", with: "limit: 100, period: 1m, shadow: true}"))
            .recordingRemovals(from: "", version: 1)
        #expect(try removed(PolicyDocument(file: Self.policy(["rpm"])).recordingRemovals(from: shadowed.yaml, version: 2)).isEmpty)
        for (bad, field) in [(Self.policy(["tpm"], extra: "removed:\n  - {template: rpm, version: 2}\n"), "removed[0].template"),
                             (Self.policy(["tpm"], extra: "removed:\n  - {template: pro.x, version: -1}\n"), "removed[0].version"),
                             (Self.policy(["tpm"], extra: "removed:\n  - {template: pro.x, versoin: 2}\n"), "removed[0].versoin"),
                             (Self.policy(["tpm"], deletions: "maybe"), "deletions")] {
            #expect { _ = try PolicyDocument(file: bad) } throws: { ($0 as? AllotError)?.message.contains(field) == true }
        }
    }
}
