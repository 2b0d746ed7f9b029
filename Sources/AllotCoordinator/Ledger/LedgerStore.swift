import AllotCore

/// The durable ledger of quota budgets: one row of `LedgerCounters` per budget and window.
/// Two implementations share one schema: `SQLiteLedger` (one file, WAL; one machine) and
/// `PostgresLedger` (shared by every coordinator of a cluster).
///
/// The cap is enforced by the database, not only by the coordinator: a change that adds
/// grants is applied only if afterwards `granted − released ≤ allowance`, in one atomic
/// conditional update. Two coordinators that both believe they own a budget therefore
/// still cannot grant more than its allowance between them.
public protocol LedgerStore: Sendable {
    /// `sqlite:/path` or `postgres://user@host:port/db` (without the password).
    var description: String { get }
    /// Creates or upgrades the schema (versioned migrations); refuses a newer schema.
    func migrate() async throws
    /// The counters of one budget's window (all zero when never written).
    func load(_ budget: BudgetID, windowStart: Instant) async throws -> LedgerCounters
    /// Applies the changes in one transaction (a group commit). For each change, whether its
    /// grants were accepted; a refused change still records its releases and reports.
    func apply(_ changes: [LedgerChange], now: Instant) async throws -> [Bool]
    func close() async
}

public struct LedgerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The schema, as numbered migrations. A database's version is the highest applied; a
/// coordinator refuses to run against a database with a version it does not know.
enum LedgerSchema {
    static let migrations: [(version: Int, sql: [String])] = [
        (1, [
            """
            CREATE TABLE quota_usage (
              budget TEXT NOT NULL,
              window_start BIGINT NOT NULL,
              window_end BIGINT NOT NULL,
              allowance BIGINT NOT NULL,
              granted BIGINT NOT NULL DEFAULT 0,
              released BIGINT NOT NULL DEFAULT 0,
              consumed BIGINT NOT NULL DEFAULT 0,
              expired BIGINT NOT NULL DEFAULT 0,
              updated_at BIGINT NOT NULL,
              PRIMARY KEY (budget, window_start)
            )
            """,
        ]),
    ]

    static var latest: Int { migrations.last!.version }

    static let createVersionTable = "CREATE TABLE IF NOT EXISTS allot_schema (version INTEGER NOT NULL, applied_at BIGINT NOT NULL)"

    static func newer(_ version: Int) -> LedgerError {
        LedgerError("the ledger's schema is version \(version), newer than this allot knows (\(latest)): upgrade allot")
    }
}

/// Parses `--ledger`: `sqlite:PATH`, `postgres://user[:password]@host[:port]/database`, or `none`.
public enum LedgerLocation: Sendable, Equatable, CustomStringConvertible {
    case none
    case sqlite(path: String)
    case postgres(host: String, port: Int, user: String, password: String?, database: String)

    public init(parsing s: String) throws(LedgerError) {
        if s == "none" || s.isEmpty {
            self = .none
        } else if s.hasPrefix("sqlite:") {
            let path = String(s.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw LedgerError("ledger: `sqlite:` needs a file path, e.g. sqlite:/var/lib/allot/ledger.db") }
            self = .sqlite(path: path)
        } else if s.hasPrefix("postgres://") || s.hasPrefix("postgresql://") {
            var rest = Substring(s[s.index(after: s.firstIndex(of: ":")!)...].dropFirst(2))
            guard let at = rest.lastIndex(of: "@") else {
                throw LedgerError("ledger: \(s) has no user (postgres://USER@HOST:PORT/DATABASE)")
            }
            let cred = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let user = cred.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
            let password = cred.contains(":") ? String(cred.split(separator: ":", maxSplits: 1)[1]) : nil
            guard let slash = rest.firstIndex(of: "/") else {
                throw LedgerError("ledger: \(s) names no database (postgres://USER@HOST:PORT/DATABASE)")
            }
            let database = String(rest[rest.index(after: slash)...])
            let hostPort = rest[..<slash]
            let parts = hostPort.split(separator: ":", maxSplits: 1)
            let host = parts.first.map(String.init) ?? ""
            let port = parts.count > 1 ? Int(parts[1]) : 5432
            guard !user.isEmpty, !host.isEmpty, !database.isEmpty, let port, (1...65535).contains(port) else {
                throw LedgerError("ledger: cannot read \(s) (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
            }
            self = .postgres(host: host, port: port, user: user, password: password, database: database)
        } else {
            throw LedgerError("ledger: unknown kind \(s) (expected sqlite:PATH, postgres://USER@HOST:PORT/DATABASE or none)")
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let host, let port, let user, _, let database): "postgres://\(user)@\(host):\(port)/\(database)"
        }
    }
}
