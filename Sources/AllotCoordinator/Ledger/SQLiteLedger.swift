import AllotCore
import AllotTransport
import Logging
import NIOPosix
import SQLiteNIO

/// The ledger in one SQLite file (WAL), the default for a single coordinator. Several
/// coordinator processes on one machine may share the file: every write transaction takes
/// SQLite's write lock first (`BEGIN IMMEDIATE`), so the conditional update is atomic
/// across processes too.
public actor SQLiteLedger: LedgerStore {
    public nonisolated let description: String
    private let connection: SQLiteConnection
    /// One thread of its own: a transaction waiting for another process's (or another
    /// ledger's) write lock blocks only this ledger, never a shared pool.
    private let pool: NIOThreadPool

    /// Opens (creating) the file; the pragmas are set by `migrate`.
    public static func open(path: String, logger: Logger = Logger(label: "allot.ledger")) throws -> SQLiteLedger {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        do {
            let connection = try SQLiteConnection.open(storage: .file(path: path), threadPool: pool, logger: logger,
                                                       on: MultiThreadedEventLoopGroup.singleton.any()).wait()
            return SQLiteLedger(path: path, connection: connection, pool: pool)
        } catch {
            try? pool.syncShutdownGracefully()
            throw LedgerError(.unavailable, "cannot open the SQLite ledger \(path): \(error)")
        }
    }

    private init(path: String, connection: SQLiteConnection, pool: NIOThreadPool) {
        description = "sqlite:\(path)"
        self.connection = connection
        self.pool = pool
    }

    public func migrate() async throws {
        _ = try await connection.query("PRAGMA journal_mode=WAL", [])
        _ = try await connection.query("PRAGMA synchronous=FULL", [])
        _ = try await connection.query("PRAGMA busy_timeout=5000", [])
        try await transaction {
            _ = try await connection.query(LedgerSchema.createVersionTable, [])
            let rows = try await connection.query("SELECT MAX(version) AS v FROM allot_schema", [])
            let current = rows.first?.column("v")?.integer ?? 0
            guard current <= LedgerSchema.latest else { throw LedgerSchema.newer(current) }
            for m in LedgerSchema.migrations where m.version > current {
                for sql in m.sql { _ = try await connection.query(sql, []) }
                _ = try await connection.query("INSERT INTO allot_schema (version, applied_at) VALUES (?, ?)",
                                               [.integer(m.version), .integer(Int(WallClock.now().nanoseconds))])
            }
        }
    }

    public func load(_ budget: BudgetID, windowStart: Instant) async throws -> LedgerCounters {
        let rows = try await connection.query(
            "SELECT granted, released, consumed, expired FROM quota_usage WHERE budget = ? AND window_start = ?",
            [.text(budget.rawValue), .integer(Int(windowStart.nanoseconds))])
        guard let r = rows.first else { return LedgerCounters() }
        // Read without trapping: a sum SQLite overflowed into a REAL is untrusted too
        // (SQLiteData.integer converts a REAL unchecked).
        func v(_ c: String) -> Int64 {
            switch r.column(c) {
            case .integer(let i)?: Int64(i)
            case .float(let d)? where d.isFinite: Int64(max(-1, min(d, Double(Checked.maxUnits))))
            default: 0
            }
        }
        return LedgerCounters(granted: v("granted"), released: v("released"), consumed: v("consumed"), expired: v("expired")).clamped
    }

    /// SQLite's two-argument min/max are `MIN`/`MAX` (they also compare a REAL left by an
    /// overflowed sum numerically).
    static func clamped(_ column: String) -> String { LedgerSchema.clamped(column, least: "MIN", greatest: "MAX") }

    public func apply(_ changes: [LedgerChange], now: Instant) async throws -> [Bool] {
        try await transaction {
            var accepted: [Bool] = []
            for c in changes {
                let key: [SQLiteData] = [.text(c.budget.rawValue), .integer(Int(c.windowStart.nanoseconds))]
                _ = try await connection.query(
                    "INSERT INTO quota_usage (budget, window_start, window_end, allowance, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    key + [.integer(Int(c.windowEnd.nanoseconds)), .integer(Int(c.allowance)), .integer(Int(now.nanoseconds))])
                let d = c.delta
                let (g, r, u, e) = (Self.clamped("granted"), Self.clamped("released"), Self.clamped("consumed"), Self.clamped("expired"))
                let (dg, dr, du, de) = (LedgerSchema.delta(d.granted), LedgerSchema.delta(d.released),
                                        LedgerSchema.delta(d.consumed), LedgerSchema.delta(d.expired))
                let all = try await connection.query(
                    """
                    UPDATE quota_usage SET granted = \(g) + ?, released = \(r) + ?, consumed = \(u) + ?,
                      expired = \(e) + ?, allowance = ?, updated_at = ?
                    WHERE budget = ? AND window_start = ? AND \(g) + ? - \(r) - ? <= ?
                    RETURNING granted
                    """,
                    [.integer(Int(dg)), .integer(Int(dr)), .integer(Int(du)), .integer(Int(de)),
                     .integer(Int(c.allowance)), .integer(Int(now.nanoseconds))] + key
                        + [.integer(Int(dg)), .integer(Int(dr)), .integer(Int(c.allowance))])
                if !all.isEmpty {
                    accepted.append(true)
                    continue
                }
                // Over the cap: record everything but the grants.
                _ = try await connection.query(
                    """
                    UPDATE quota_usage SET released = \(r) + ?, consumed = \(u) + ?, expired = \(e) + ?, updated_at = ?
                    WHERE budget = ? AND window_start = ?
                    """,
                    [.integer(Int(dr)), .integer(Int(du)), .integer(Int(de)), .integer(Int(now.nanoseconds))] + key)
                accepted.append(d.granted <= 0)
            }
            return accepted
        }
    }

    public func recordAuditHead(node: String, _ head: AuditHead, now: Instant) async throws {
        _ = try await connection.query(LedgerSchema.upsertAuditHead.replacingOccurrences(of: "$", with: "?"),
                                       [.text(node), .text(head.file), .integer(Int(head.sequence)), .text(head.mac), .integer(Int(now.nanoseconds))])
    }

    public func auditHead(node: String) async throws -> AuditHead? {
        let rows = try await connection.query("SELECT file, sequence, mac FROM audit_heads WHERE node = ?", [.text(node)])
        guard let r = rows.first, let file = r.column("file")?.string, let seq = r.column("sequence")?.integer,
              let mac = r.column("mac")?.string else { return nil }
        return AuditHead(file: file, sequence: Int64(seq), mac: mac)
    }

    public func head(of document: VersionedDocument) async throws -> DirectoryVersionRow? {
        try await versionRows("SELECT version, author, created_at, change, document FROM \(document.table) ORDER BY version DESC LIMIT 1").first
    }

    public func append(_ row: DirectoryVersionRow, to document: VersionedDocument) async throws -> Bool {
        let rows = try await connection.query(
            "INSERT INTO \(document.table) (version, author, created_at, change, document) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING version",
            [.integer(Int(row.version)), .text(row.author), .integer(Int(row.created.nanoseconds)), .text(row.change), .text(row.document)])
        return !rows.isEmpty
    }

    public func history(of document: VersionedDocument, limit: Int) async throws -> [DirectoryVersionRow] {
        try await versionRows("SELECT version, author, created_at, change, '' AS document FROM \(document.table) ORDER BY version DESC LIMIT \(max(0, limit))")
    }

    public nonisolated func waitForVersions(timeout: Duration) async {
        try? await Task.sleep(for: timeout)
    }

    private func versionRows(_ sql: String) async throws -> [DirectoryVersionRow] {
        try await connection.query(sql, []).map { r in
            DirectoryVersionRow(version: Int64(r.column("version")?.integer ?? 0), author: r.column("author")?.string ?? "",
                                created: Instant(nanoseconds: Int64(r.column("created_at")?.integer ?? 0)),
                                change: r.column("change")?.string ?? "", document: r.column("document")?.string ?? "")
        }
    }

    /// One statement, results dropped (tests).
    func execute(_ sql: String) async throws {
        _ = try await connection.query(sql, [])
    }

    private func transaction<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        _ = try await connection.query("BEGIN IMMEDIATE", [])
        do {
            let r = try await body()
            _ = try await connection.query("COMMIT", [])
            return r
        } catch {
            _ = try? await connection.query("ROLLBACK", [])
            throw error
        }
    }

    public func close() async {
        try? await connection.close()
        try? await pool.shutdownGracefully()
    }
}
