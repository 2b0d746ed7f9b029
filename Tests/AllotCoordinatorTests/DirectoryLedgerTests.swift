import AllotConfig
import AllotCore
@testable import AllotCoordinator
import AllotTransport
import Foundation
import Testing

/// The consumer directory in the ledger (issue 17): versions are appended by compare-and-set
/// on the version number, so two coordinators writing at once never lose a change.
enum DirectoryLedgerChecks {
    /// One version per number: a second writer of the same number is told so; history is
    /// newest first, without documents.
    static func compareAndSet(_ s: any LedgerStore) async throws {
        let v = (try await s.directoryHead()?.version ?? 0) + 1
        let row = DirectoryVersionRow(version: v, author: "ops", created: Instant(seconds: 1), change: "c1", document: "{\"consumers\":[],\"keys\":[]}")
        #expect(try await s.appendDirectory(row))
        var other = row
        (other.author, other.change) = ("other", "c2")
        #expect(try await s.appendDirectory(other) == false, "the version is taken")
        #expect(try await s.directoryHead() == row)
        other.version = v + 1
        #expect(try await s.appendDirectory(other))
        let h = try await s.directoryHistory(limit: 2)
        #expect(h.map(\.version) == [v + 1, v] && h.map(\.author) == ["other", "ops"] && h.allSatisfy { $0.document.isEmpty })
    }

    /// Two keepers (two coordinators) on the same ledger, 8 changes each at once: all 16
    /// keys end up in the newest version, each change its own version.
    static func concurrentWriters(_ a: any LedgerStore, _ b: any LedgerStore) async throws {
        let tiers: Set<String> = ["pro"]
        let ka = DirectoryKeeper(tiers: tiers, store: a), kb = DirectoryKeeper(tiers: tiers, store: b)
        let start = (try await a.directoryHead()?.version ?? 0)
        let tag = UUID().uuidString.prefix(8)
        _ = try await ka.change(.setConsumer(.init(id: "c-\(tag)", tier: "pro")), author: "a")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                let keeper = i % 2 == 0 ? ka : kb
                group.addTask {
                    let k = Directory.KeyRecord(consumer: "c-\(tag)", keySHA256: (UUID().uuidString + UUID().uuidString).replacingOccurrences(of: "-", with: "").lowercased(), created: Instant(seconds: 1), expires: nil)
                    _ = try await keeper.change(.createKey(k, tier: nil), author: i % 2 == 0 ? "a" : "b")
                }
            }
            try await group.waitForAll()
        }
        try await ka.refresh()
        #expect(ka.version == start + 17)
        #expect(ka.directory.keys.filter { $0.consumer == "c-\(tag)" }.count == 16)
        #expect(Set(try await a.directoryHistory(limit: 17).map(\.version)).count == 17)
    }
}

extension DirectoryLedgerChecks {
    /// PostgreSQL: a coordinator waiting for a change hears another's append at once.
    static func notifies(_ a: any LedgerStore, _ b: any LedgerStore) async throws {
        let start = ContinuousClock.now
        async let waited: Void = b.waitForVersions(timeout: .seconds(8))
        try await Task.sleep(for: .milliseconds(500)) // its LISTEN is in place
        let v = (try await a.directoryHead()?.version ?? 0) + 1
        let appended = ContinuousClock.now
        #expect(try await a.appendDirectory(DirectoryVersionRow(version: v, author: "ops", created: Instant(seconds: 1), change: "n",
                                                                document: "{\"consumers\":[],\"keys\":[]}")))
        await waited
        let took = ContinuousClock.now - start
        print("DirectoryLedgerTests: woken \(ContinuousClock.now - appended) after another client's append")
        #expect(took < .seconds(3), "woken by NOTIFY after \(took), not by the 8 s timeout")
    }
}

@Suite("Consumer directory in the ledger (SQLite)", .serialized)
struct DirectoryLedgerTests {
    @Test("compare-and-set versions; two coordinators on one file lose no change; the keeper refuses a change without a ledger")
    func sqlite() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("allot-dirledger-\(UUID().uuidString.prefix(8)).db").path
        let a = try SQLiteLedger.open(path: path), b = try SQLiteLedger.open(path: path)
        try await a.migrate()
        try await b.migrate()
        try await DirectoryLedgerChecks.compareAndSet(a)
        try await DirectoryLedgerChecks.concurrentWriters(a, b)
        await a.close()
        await b.close()
        try? FileManager.default.removeItem(atPath: path)
        let none = DirectoryKeeper(tiers: ["pro"], store: nil)
        await #expect(throws: AllotError.self) { _ = try await none.change(.setConsumer(.init(id: "x", tier: "pro")), author: "ops") }
        // An expiry in the past by the coordinator's clock (whatever the client says it is).
        let c = try SQLiteLedger.open(path: path)
        try await c.migrate()
        let keeper = DirectoryKeeper(tiers: ["pro"], store: c)
        let hex = String(repeating: "ab", count: 32)
        let stale = Directory.KeyRecord(consumer: "x", keySHA256: hex, created: Instant(seconds: 1), expires: Instant(seconds: 2))
        await #expect(throws: AllotError.self) { _ = try await keeper.change(.createKey(stale, tier: "pro"), author: "ops") }
        await c.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    @Test("PostgreSQL: the same, two clients on one database", .enabled(if: TestPostgres.enabled))
    func postgres() async throws {
        let a = try TestPostgres.ledger(), b = try TestPostgres.ledger()
        try await a.migrate()
        try await DirectoryLedgerChecks.compareAndSet(a)
        try await DirectoryLedgerChecks.concurrentWriters(a, b)
        try await DirectoryLedgerChecks.notifies(a, b)
        await a.close()
        await b.close()
    }
}
