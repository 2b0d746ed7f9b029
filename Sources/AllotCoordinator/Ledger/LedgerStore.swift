import AllotCore
import Foundation

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
    /// Keeps `head` as `node`'s audit head unless a later one (a higher sequence) is kept.
    func recordAuditHead(node: String, _ head: AuditHead, now: Instant) async throws
    /// `node`'s audit head, as last recorded.
    func auditHead(node: String) async throws -> AuditHead?
    /// The newest version of a versioned document (nil: none yet).
    func head(of document: VersionedDocument) async throws -> DirectoryVersionRow?
    /// Adds `row` as a new version; false when its version number is taken (another
    /// coordinator wrote first: read the head again and redo the change on it).
    func append(_ row: DirectoryVersionRow, to document: VersionedDocument) async throws -> Bool
    /// The newest `limit` versions, newest first, without their documents.
    func history(of document: VersionedDocument, limit: Int) async throws -> [DirectoryVersionRow]
    /// Returns after `timeout`, or as soon as another writer says it appended a version of
    /// any document (PostgreSQL: LISTEN/NOTIFY; SQLite: only the timeout, the caller reads the heads).
    func waitForVersions(timeout: Duration) async
    func close() async
}

/// What the ledger keeps in versions: the consumer directory (keys and consumers, JSON) and
/// the deployment's policy (budgets, tiers and models, YAML: `allot config apply`).
public enum VersionedDocument: String, Sendable, CaseIterable {
    case directory
    case config

    var table: String { self == .directory ? "directory_versions" : "config_versions" }
    /// The refusal when other coordinators kept winning the next version (`appendNext`).
    var contended: AllotError {
        AllotError(.invalidSettings, "the \(self == .directory ? "directory" : "configuration") kept changing under this change for five seconds; try again")
    }
    /// PostgreSQL's notification channel, shared by both (a waiter reads every head).
    static let channel = "allot_versions"
}

extension LedgerStore {
    public func directoryHead() async throws -> DirectoryVersionRow? { try await head(of: .directory) }
    public func appendDirectory(_ row: DirectoryVersionRow) async throws -> Bool { try await append(row, to: .directory) }
    public func directoryHistory(limit: Int) async throws -> [DirectoryVersionRow] { try await history(of: .directory, limit: limit) }
}

/// One version of the consumer directory or of the policy: who made it (an admin certificate's name), when,
/// what it changed (the directory: one line; the policy: a summary line and the diff), and the
/// whole document after it.
public struct DirectoryVersionRow: Sendable, Hashable {
    public var version: Int64
    public var author: String
    public var created: Instant
    public var change: String
    public var document: String

    public init(version: Int64, author: String, created: Instant, change: String, document: String) {
        (self.version, self.author, self.created, self.change, self.document) = (version, author, created, change, document)
    }
}

/// What can go wrong with the ledger, in the one error shape (`CodedError`).
public typealias LedgerError = CodedError<LedgerErrorCode>

public enum LedgerErrorCode: String, ErrorCode {
    /// The database's schema is newer than this allot knows.
    case schemaTooNew = "schema_too_new"
    /// The `ledger:` setting (or a file it names) cannot be used.
    case invalidLocation = "invalid_location"
    /// The database cannot be opened or reached.
    case unavailable
    /// The database did not answer in time.
    case timeout
}

/// The schema, as numbered migrations. A database's version is the highest applied; a
/// coordinator refuses to run against a database with a version it does not know.
enum LedgerSchema {
    /// A counter column as the writers use it: within 0...2^62 (`Checked.maxUnits`), so a row
    /// edited by hand (near 2^63, negative, or a REAL in SQLite) neither overflows the sums
    /// below (the database would refuse the transaction, and every retry with it) nor counts
    /// as more room than the allowance. `least`/`greatest`: the dialect's two-argument names.
    static func clamped(_ column: String, least: String, greatest: String) -> String {
        "\(greatest)(0, \(least)(\(column), \(Checked.maxUnits)))"
    }

    /// A delta as written: within 0...2^62 − 1, so a clamped column plus it fits in 63 bits.
    static func delta(_ v: Int64) -> Int64 { min(max(v, 0), Checked.maxUnits - 1) }

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
        (2, [
            """
            CREATE TABLE audit_heads (
              node TEXT PRIMARY KEY,
              file TEXT NOT NULL,
              sequence BIGINT NOT NULL,
              mac TEXT NOT NULL,
              reported_at BIGINT NOT NULL
            )
            """,
        ]),
        (3, [
            """
            CREATE TABLE directory_versions (
              version BIGINT PRIMARY KEY,
              author TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              change TEXT NOT NULL,
              document TEXT NOT NULL
            )
            """,
        ]),
        (4, [
            """
            CREATE TABLE config_versions (
              version BIGINT PRIMARY KEY,
              author TEXT NOT NULL,
              created_at BIGINT NOT NULL,
              change TEXT NOT NULL,
              document TEXT NOT NULL
            )
            """,
        ]),
    ]

    /// Upsert keeping the highest sequence (SQLite ≥ 3.24 and PostgreSQL share the syntax).
    static let upsertAuditHead = """
        INSERT INTO audit_heads (node, file, sequence, mac, reported_at) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (node) DO UPDATE SET file = excluded.file, sequence = excluded.sequence, mac = excluded.mac,
          reported_at = excluded.reported_at
        WHERE excluded.sequence >= audit_heads.sequence
        """

    static var latest: Int { migrations.last!.version }

    static let createVersionTable = "CREATE TABLE IF NOT EXISTS allot_schema (version INTEGER NOT NULL, applied_at BIGINT NOT NULL)"

    static func newer(_ version: Int) -> LedgerError {
        LedgerError(.schemaTooNew, "the ledger's schema is version \(version), newer than this allot knows (\(latest)): upgrade allot")
    }
}

/// Parses `--ledger`: `sqlite:PATH`, `postgres://USER@HOST[:PORT]/DATABASE[?OPTIONS]`, or `none`.
/// PostgreSQL options (libpq's names where they exist): `sslmode=verify-full` (the default:
/// TLS, the server's certificate checked against `sslrootcert` — a PEM file — or the system's
/// roots, and its name against HOST), `require` (TLS, not verified), `disable`;
/// `password_file=PATH` or `password_env=NAME` (so the password is in neither the file nor a
/// command line). A password in the URL still works; it is never printed.
public enum LedgerLocation: Sendable, Equatable, CustomStringConvertible {
    case none
    case sqlite(path: String)
    case postgres(PostgresTarget)

    public init(parsing s: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(LedgerError) {
        if s == "none" || s.isEmpty {
            self = .none
        } else if s.hasPrefix("sqlite:") {
            let path = String(s.dropFirst("sqlite:".count))
            guard !path.isEmpty else { throw LedgerError(.invalidLocation, "ledger: `sqlite:` needs a file path, e.g. sqlite:/var/lib/allot/ledger.db") }
            self = .sqlite(path: path)
        } else if s.hasPrefix("postgres://") || s.hasPrefix("postgresql://") {
            self = .postgres(try PostgresTarget(parsing: s, environment: environment))
        } else {
            throw LedgerError(.invalidLocation, "ledger: unknown kind \(PostgresTarget.redacted(s)) (expected sqlite:PATH, postgres://USER@HOST:PORT/DATABASE or none)")
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let t): t.description
        }
    }
}

/// Where a PostgreSQL ledger is and how to reach it. `description` never holds the password.
public struct PostgresTarget: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Equatable {
        case disable
        case require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var tls: TLSMode
    /// PEM file of the CA(s) the server's certificate must chain to (nil: the system's roots).
    public var rootCertificate: String?

    public init(host: String, port: Int = 5432, user: String, password: String? = nil, database: String,
                tls: TLSMode = .verifyFull, rootCertificate: String? = nil) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls
        self.rootCertificate = rootCertificate
    }

    public init(parsing s: String, environment: [String: String]) throws(LedgerError) {
        let shown = Self.redacted(s)
        var rest = Substring(s[s.index(after: s.firstIndex(of: ":")!)...].dropFirst(2))
        var options: [String: String] = [:]
        if let q = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2 else { throw LedgerError(.invalidLocation, "ledger: \(shown): option '\(pair)' is not NAME=VALUE") }
                options[String(kv[0])] = String(kv[1])
            }
            rest = rest[..<q]
        }
        guard let at = rest.lastIndex(of: "@") else {
            throw LedgerError(.invalidLocation, "ledger: \(shown) has no user (postgres://USER@HOST:PORT/DATABASE)")
        }
        let cred = rest[..<at]
        rest = rest[rest.index(after: at)...]
        // Percent-encoded as in libpq's URLs (`%40` for @, `%3F` for ?), or from password_file.
        let user = (cred.split(separator: ":", maxSplits: 1).first.map(String.init) ?? "").removingPercentEncoding ?? ""
        var password = cred.contains(":") ? String(cred.split(separator: ":", maxSplits: 1)[1]).removingPercentEncoding : nil
        guard let slash = rest.firstIndex(of: "/") else {
            throw LedgerError(.invalidLocation, "ledger: \(shown) names no database (postgres://USER@HOST:PORT/DATABASE)")
        }
        let database = String(rest[rest.index(after: slash)...])
        let parts = rest[..<slash].split(separator: ":", maxSplits: 1)
        let host = parts.first.map(String.init) ?? ""
        let port = parts.count > 1 ? Int(parts[1]) : 5432
        guard !user.isEmpty, !host.isEmpty, !database.isEmpty, let port, (1...65535).contains(port) else {
            throw LedgerError(.invalidLocation, "ledger: cannot read \(shown) (expected postgres://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=PEM&password_file=PATH])")
        }
        for key in options.keys where !["sslmode", "sslrootcert", "password_file", "password_env"].contains(key) {
            throw LedgerError(.invalidLocation, "ledger: \(shown): unknown option '\(key)' (sslmode, sslrootcert, password_file, password_env)")
        }
        guard let mode = TLSMode(rawValue: options["sslmode"] ?? "verify-full") else {
            throw LedgerError(.invalidLocation, "ledger: \(shown): sslmode must be verify-full, require or disable")
        }
        if let file = options["password_file"] {
            guard password == nil else { throw LedgerError(.invalidLocation, "ledger: \(shown): a password in the URL and a password_file") }
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw LedgerError(.invalidLocation, "ledger: cannot read the password file \(file)")
            }
            password = text.trimmingCharacters(in: .newlines)
        }
        if let name = options["password_env"] {
            guard password == nil else { throw LedgerError(.invalidLocation, "ledger: \(shown): two sources for the password") }
            guard let v = environment[name] else { throw LedgerError(.invalidLocation, "ledger: the environment variable \(name) (password_env) is not set") }
            password = v
        }
        self.init(host: host, port: port, user: user, password: password, database: database, tls: mode,
                  rootCertificate: options["sslrootcert"])
    }

    public var description: String {
        var d = "postgres://\(user)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)"
        if let rootCertificate { d += "&sslrootcert=\(rootCertificate)" }
        return d
    }

    /// `s` with everything between `USER:` and the last `@` replaced by `***` (whatever the
    /// password holds, even an unencoded `?`, `/` or `@`; too much hidden rather than too little).
    public static func redacted(_ s: String) -> String {
        guard let scheme = s.range(of: "://"), let at = s.lastIndex(of: "@"), at > scheme.upperBound,
              let colon = s[scheme.upperBound..<at].firstIndex(of: ":") else { return s }
        return String(s[..<s.index(after: colon)]) + "***" + String(s[at...])
    }
}

extension LedgerStore {
    /// Appends the next version of `document`: `make` builds it from the newest version the
    /// caller holds after `refresh`; compare-and-set on the version number, so two coordinators
    /// never lose one. When another coordinator wins the number it is redone on the new head,
    /// with a short random pause, for up to five seconds (they may win again and again while
    /// they drain their own queues); then refused.
    func appendNext(to document: VersionedDocument, refresh: () async throws -> Void,
                    make: () throws -> DirectoryVersionRow) async throws -> DirectoryVersionRow {
        let deadline = ContinuousClock.now + .seconds(5)
        repeat {
            try await refresh()
            let row = try make()
            if try await append(row, to: document) { return row }
            try await Task.sleep(for: .milliseconds(Int64.random(in: 1...20)))
        } while ContinuousClock.now < deadline
        throw document.contended
    }
}
