import AllotCore
@testable import AllotCoordinator
import AllotNode
import AllotTransport
import Foundation
import Synchronization
import Testing

/// The durable ledger: schema, the cap enforced in the database, group commit, and a
/// coordinator that restarts mid-month without forgetting what was consumed.
@Suite("Ledger (SQLite)", .serialized)
struct SQLiteLedgerTests {
    static let window = (Instant(seconds: 1_000), Instant(seconds: 2_000))

    static func change(_ budget: String = "q", granted: Int64 = 0, released: Int64 = 0, consumed: Int64 = 0,
                       expired: Int64 = 0, allowance: Int64 = 100) -> LedgerChange {
        LedgerChange(budget: BudgetID(budget), windowStart: window.0, windowEnd: window.1, allowance: allowance,
                     delta: LedgerCounters(granted: granted, released: released, consumed: consumed, expired: expired))
    }

    @Test("the schema migrates once; the cap holds in the database; refused grants still record their reports")
    func store() async throws {
        let path = tempPath("ledger.db")
        let ledger = try SQLiteLedger.open(path: path)
        try await ledger.migrate()
        try await ledger.migrate() // idempotent
        let now = Instant(seconds: 1_500)
        #expect(try await ledger.apply([Self.change(granted: 60)], now: now) == [true])
        // 60 + 50 > 100: refused, but the release and report in the same change are kept.
        #expect(try await ledger.apply([Self.change(granted: 50, released: 5, consumed: 20)], now: now) == [false])
        // Two changes in one transaction: the second fits once the first released.
        #expect(try await ledger.apply([Self.change(released: 10), Self.change("other", granted: 100)], now: now) == [true, true])
        #expect(try await ledger.apply([Self.change(granted: 55)], now: now) == [true])
        let row = try await ledger.load("q", windowStart: Self.window.0)
        #expect(row == LedgerCounters(granted: 115, released: 15, consumed: 20))
        #expect(row.committed == 100)
        #expect(try await ledger.load("never", windowStart: Self.window.0) == LedgerCounters())
        await ledger.close()
        // The file carries on across opens.
        let again = try SQLiteLedger.open(path: path)
        try await again.migrate()
        #expect(try await again.load("q", windowStart: Self.window.0).granted == 115)
        await again.close()
    }

    @Test("a ledger written by a newer allot is refused with a clear error")
    func newerSchema() async throws {
        let path = tempPath("ledger.db")
        let ledger = try SQLiteLedger.open(path: path)
        try await ledger.migrate()
        await ledger.close()
        // Pretend a future version migrated this file.
        let raw = try SQLiteLedger.open(path: path)
        try await raw.execute("INSERT INTO allot_schema (version, applied_at) VALUES (99, 0)")
        await raw.close()
        let old = try SQLiteLedger.open(path: path)
        await #expect(throws: LedgerError.self) { try await old.migrate() }
        do { try await old.migrate() } catch { #expect("\(error)".contains("version 99")) }
        await old.close()
    }

    @Test("a row edited by hand (a REAL past 2^63, negatives) is read clamped, without a trap")
    func hostileRow() async throws {
        let path = tempPath("ledger.db")
        let raw = try SQLiteLedger.open(path: path)
        try await raw.migrate()
        // SQLite keeps 1e300 as a REAL in a BIGINT column; its integer view would trap.
        try await raw.execute("INSERT INTO quota_usage (budget, window_start, window_end, allowance, granted, released, consumed, expired, updated_at) VALUES ('b', 0, 1, 100, 1e300, -5, -9223372036854775808, 9223372036854775807, 0)")
        let row = try await raw.load("b", windowStart: Instant(nanoseconds: 0))
        await raw.close()
        #expect(row == LedgerCounters(granted: Checked.maxUnits, released: 0, consumed: 0, expired: Checked.maxUnits))
        #expect(row.unreported == 0 && row.committed == Checked.maxUnits)
    }

    @Test("writes over a row edited by hand (past 2^63, negatives) neither fail nor grant past the allowance")
    func hostileRowWrites() async throws {
        let ledger = try SQLiteLedger.open(path: tempPath("ledger.db"))
        try await ledger.migrate()
        let start = Self.window.0.nanoseconds
        try await ledger.execute("INSERT INTO quota_usage (budget, window_start, window_end, allowance, granted, released, consumed, expired, updated_at) VALUES ('full', \(start), 1, 100, 9223372036854775807, -9223372036854775808, 1e300, -1, 0)")
        try await ledger.execute("INSERT INTO quota_usage (budget, window_start, window_end, allowance, granted, released, consumed, expired, updated_at) VALUES ('empty', \(start), 1, 100, -100, 0, 0, 0, 0)")
        let now = Instant(seconds: 1_500)
        // The row claims everything granted: a grant is refused (the transaction does not
        // fail, as the unclamped sum did), its reports land; so do reports on their own.
        #expect(try await ledger.apply([Self.change("full", granted: 10, released: 3)], now: now) == [false])
        #expect(try await ledger.apply([Self.change("full", released: 5, consumed: .max)], now: now) == [true])
        #expect(try await ledger.load("full", windowStart: Self.window.0)
            == LedgerCounters(granted: Checked.maxUnits, released: 8, consumed: Checked.maxUnits, expired: 0))
        // A negative count is no credit: granted counts from 0, up to the allowance.
        #expect(try await ledger.apply([Self.change("empty", granted: 100)], now: now) == [true])
        #expect(try await ledger.apply([Self.change("empty", granted: 1)], now: now) == [false])
        #expect(try await ledger.apply([Self.change("empty", granted: .max)], now: now) == [false])
        #expect(try await ledger.load("empty", windowStart: Self.window.0).granted == 100)
        await ledger.close()
    }

    @Test("group commit: many grants submitted together share one transaction")
    func groupCommit() async throws {
        let ledger = try SQLiteLedger.open(path: tempPath("ledger.db"))
        try await ledger.migrate()
        let writer = LedgerWriter(store: ledger, logger: quietLogger("l"))
        let results = Mutex<[[Bool]?]>([])
        for i in 0..<200 {
            writer.submit([Self.change("b\(i % 20)", granted: 1, allowance: 1_000_000)]) { r in results.withLock { $0.append(r) } }
        }
        await writer.flush()
        #expect(results.withLock { $0.count } == 200)
        #expect(results.withLock { $0.allSatisfy { $0 == [true] } })
        let stats = writer.stats
        #expect(stats.commits < 200 && stats.commits >= 1)
        print("group commit: 200 submissions in \(stats.commits) transactions")
        #expect(try await ledger.load("b3", windowStart: Self.window.0).granted == 10)
        await ledger.close()
    }

    @Test("ledger locations parse, and bad ones say what is expected")
    func locations() throws {
        #expect(try LedgerLocation(parsing: "sqlite:/var/lib/allot/l.db") == .sqlite(path: "/var/lib/allot/l.db"))
        #expect(try LedgerLocation(parsing: "postgres://allot:pw@db.internal:5433/quota")
            == .postgres(.init(host: "db.internal", port: 5433, user: "allot", password: "pw", database: "quota")))
        #expect(try LedgerLocation(parsing: "postgres://allot@db/quota") == .postgres(.init(host: "db", user: "allot", database: "quota")))
        // TLS options; the password from a file or the environment; verify-full by default.
        let pwFile = tempPath("pgpass")
        try "s3cret\n".write(toFile: pwFile, atomically: true, encoding: .utf8)
        #expect(try LedgerLocation(parsing: "postgres://allot@db/q?sslmode=verify-full&sslrootcert=/etc/allot/pg-ca.pem&password_file=\(pwFile)")
            == .postgres(.init(host: "db", user: "allot", password: "s3cret", database: "q", rootCertificate: "/etc/allot/pg-ca.pem")))
        #expect(try LedgerLocation(parsing: "postgres://allot@db/q?sslmode=disable&password_env=PGPW", environment: ["PGPW": "x"])
            == .postgres(.init(host: "db", user: "allot", password: "x", database: "q", tls: .disable)))
        // The password is never printed: not in the description, not in errors.
        let withPassword = try LedgerLocation(parsing: "postgres://allot:hunter2@db/q")
        #expect(!withPassword.description.contains("hunter2"))
        for bad in ["postgres://allot:hunter2@db:99999/q", "postgres://allot:hunter2@db/q?sslmode=maybe", "postgres://allot:hunter2@db/q?nope=1",
                    "postgres://allot:hunter2@db/q?password_env=NOT_SET_ANYWHERE"] {
            do {
                _ = try LedgerLocation(parsing: bad, environment: [:])
                Issue.record("\(bad) was accepted")
            } catch {
                #expect(!error.description.contains("hunter2"), "\(error)")
            }
        }
        #expect(try LedgerLocation(parsing: "none") == LedgerLocation.none)
        for bad in ["sqlite:", "mysql://x", "postgres://db/quota", "postgres://u@db:99999/q", "postgres://u@db"] {
            #expect(throws: LedgerError.self) { try LedgerLocation(parsing: bad) }
        }
        // The password never appears in logs.
        #expect("\(try LedgerLocation(parsing: "postgres://allot:secret@db/q"))".contains("secret") == false)
    }

    @Test("restart mid-month on SQLite: the consumed amount survives exactly, and the cap holds across both lives")
    func restart() async throws {
        let path = tempPath("ledger.db")
        let h = Harness()
        let allocator = fastAllocator
        let month = try BudgetSpec(id: "acme.month", unit: .requests, kind: .quota(allowance: 3000, window: try CalendarWindow(.month)))
        try await h.start("c0", address: "c0:1", budgets: [month], seeds: nil, ledger: try SQLiteLedger.open(path: path), allocator: allocator)
        let nodes = try (0..<3).map { try TestNode("n\($0)", budgets: [month], seeds: ["c0:1"], harness: h, leaseTTL: allocator.leaseTTL) }
        let windowStart = try CalendarWindow(.month).window(containing: WallClock.now()).0
        // First life: 1.5 s of traffic, some of it reported.
        let t0 = WallClock.now()
        while WallClock.now() - t0 < .milliseconds(1500) {
            for n in nodes { for _ in 0..<4 { n.admit("acme.month") } }
            try await Task.sleep(for: .milliseconds(20))
        }
        let before = nodes.reduce(0) { $0 + $1.total("acme.month") }
        #expect(before > 0)
        // Crash: nothing released, nothing flushed. What the ledger holds is all that is left.
        h.crash("c0:1")
        try await Task.sleep(for: .milliseconds(100))
        let probe = try SQLiteLedger.open(path: path)
        let atCrash = try await probe.load("acme.month", windowStart: windowStart)
        await probe.close()
        #expect(atCrash.granted > 0)
        // Second life, same file: it resumes the month from the ledger.
        let again = try await h.start("c0", address: "c0:1", budgets: [month], seeds: nil, ledger: try SQLiteLedger.open(path: path), allocator: allocator)
        await h.wait(3) { again.allocatorStatus("acme.month").map { $0.consumed + $0.outstanding > 0 } ?? false }
        let resumed = try #require(again.allocatorStatus("acme.month"))
        // What the ledger counted against the allowance: consumed + on adopted leases. The
        // nodes' lease clients ask again as soon as the new life answers, so grants may follow
        // the resume before the status is read; each is written to the ledger before it is
        // sent, so a row read after the status bounds it from above (an exact comparison with
        // the row at the crash failed when 58 units were granted in between).
        let reader = try SQLiteLedger.open(path: path)
        let after = try await reader.load("acme.month", windowStart: windowStart)
        await reader.close()
        let resumedSum = resumed.consumed + resumed.outstanding
        #expect(resumedSum >= atCrash.committed && resumedSum <= after.committed, "resumed \(resumed), ledger at the crash \(atCrash), after \(after)")
        // Second life: traffic until the month's allowance runs out.
        let t1 = WallClock.now()
        while WallClock.now() - t1 < .seconds(5) {
            for n in nodes { for _ in 0..<6 { n.admit("acme.month") } }
            try await Task.sleep(for: .milliseconds(20))
        }
        for n in nodes { await n.stop() }
        await h.stopAll()
        let total = nodes.reduce(0) { $0 + $1.total("acme.month") }
        let end = try SQLiteLedger.open(path: path)
        let row = try await end.load("acme.month", windowStart: windowStart)
        await end.close()
        print("restart: \(before) admitted before the crash, \(total) in all of 3000; ledger \(row)")
        #expect(total <= 3000)
        #expect(row.committed <= 3000)
        // Everything admitted is in the ledger as consumed or as never returned.
        #expect(Int64(total) <= row.committed)
        #expect(total >= 2500, "the restart lost \(3000 - total) of the month")
    }
}
