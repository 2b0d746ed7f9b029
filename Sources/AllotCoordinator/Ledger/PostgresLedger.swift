import AllotCore
import AllotTransport
import Logging
import NIOSSL
import PostgresNIO

/// The ledger in PostgreSQL, shared by all coordinators of a cluster. The cap holds in the
/// database: the conditional `UPDATE … WHERE granted + g − released ≤ allowance` runs under
/// the row's lock (READ COMMITTED re-checks the condition on the newest row version), so
/// concurrent grants from two coordinators cannot together pass the allowance.
///
/// The client pool reconnects by itself after the server restarts; a call that cannot reach
/// the server fails after `timeout` and the writer retries with backoff.
public final class PostgresLedger: LedgerStore {
    /// The counter columns as the conditional update uses them (`LedgerSchema.clamped`).
    static let (g, r, u, e) = (clamped("granted"), clamped("released"), clamped("consumed"), clamped("expired"))
    static func clamped(_ column: String) -> String { LedgerSchema.clamped(column, least: "LEAST", greatest: "GREATEST") }

    public let description: String
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let logger: Logger
    private let timeout: Duration

    /// Connects as `target` says: TLS verified against its root certificate (or the system's)
    /// and host name unless `sslmode` says otherwise. The password is never logged or printed.
    public init(_ target: PostgresTarget, timeout: Duration = .seconds(2), logger: Logger = Logger(label: "allot.ledger")) throws {
        description = target.description
        let tls: PostgresClient.Configuration.TLS
        switch target.tls {
        case .disable:
            tls = .disable
        case .require:
            var t = TLSConfiguration.makeClientConfiguration()
            t.certificateVerification = .none
            tls = .require(t)
        case .verifyFull:
            var t = TLSConfiguration.makeClientConfiguration()
            t.certificateVerification = .fullVerification
            if let root = target.rootCertificate {
                do { t.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root)) } catch {
                    throw LedgerError(.invalidLocation, "ledger: cannot read sslrootcert \(root): \(error)")
                }
            }
            tls = .require(t)
        }
        var config = PostgresClient.Configuration(host: target.host, port: target.port, username: target.user, password: target.password,
                                                  database: target.database, tls: tls)
        config.options.connectTimeout = timeout
        // Four for the ledger's writes and reads, one for the versions' LISTEN.
        config.options.maximumConnections = 5
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        self.timeout = timeout
        runner = Task { await client.run() }
    }

    public func migrate() async throws {
        try await bounded { [client, logger] in
            try await client.withTransaction(logger: logger) { conn in
                // One migrator at a time across the cluster.
                try await conn.query("SELECT pg_advisory_xact_lock(7411)", logger: logger)
                try await conn.query(PostgresQuery(unsafeSQL: LedgerSchema.createVersionTable), logger: logger)
                var current = 0
                for try await v in try await conn.query("SELECT COALESCE(MAX(version), 0) FROM allot_schema", logger: logger)
                    .decode(Int.self) { current = v }
                guard current <= LedgerSchema.latest else { throw LedgerSchema.newer(current) }
                for m in LedgerSchema.migrations where m.version > current {
                    for sql in m.sql { try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                    let now = WallClock.now().nanoseconds
                    try await conn.query("INSERT INTO allot_schema (version, applied_at) VALUES (\(m.version), \(now))", logger: logger)
                }
            }
        }
    }

    public func load(_ budget: BudgetID, windowStart: Instant) async throws -> LedgerCounters {
        try await bounded { [client, logger] in
            let rows = try await client.query(
                "SELECT granted, released, consumed, expired FROM quota_usage WHERE budget = \(budget.rawValue) AND window_start = \(windowStart.nanoseconds)",
                logger: logger)
            var out = LedgerCounters()
            for try await (g, r, c, e) in rows.decode((Int64, Int64, Int64, Int64).self) {
                out = LedgerCounters(granted: g, released: r, consumed: c, expired: e).clamped
            }
            return out
        }
    }

    public func apply(_ changes: [LedgerChange], now: Instant) async throws -> [Bool] {
        try await bounded { [client, logger] in
            try await client.withTransaction(logger: logger) { conn in
                var accepted: [Bool] = []
                for c in changes {
                    let b = c.budget.rawValue, w = c.windowStart.nanoseconds, t = now.nanoseconds
                    let (dg, dr, du, de) = (LedgerSchema.delta(c.delta.granted), LedgerSchema.delta(c.delta.released),
                                            LedgerSchema.delta(c.delta.consumed), LedgerSchema.delta(c.delta.expired))
                    try await conn.query("""
                        INSERT INTO quota_usage (budget, window_start, window_end, allowance, updated_at)
                        VALUES (\(b), \(w), \(c.windowEnd.nanoseconds), \(c.allowance), \(t)) ON CONFLICT DO NOTHING
                        """, logger: logger)
                    var applied = false
                    for try await _ in try await conn.query("""
                        UPDATE quota_usage SET granted = \(unescaped: Self.g) + \(dg), released = \(unescaped: Self.r) + \(dr),
                          consumed = \(unescaped: Self.u) + \(du), expired = \(unescaped: Self.e) + \(de), allowance = \(c.allowance), updated_at = \(t)
                        WHERE budget = \(b) AND window_start = \(w) AND \(unescaped: Self.g) + \(dg) - \(unescaped: Self.r) - \(dr) <= \(c.allowance)
                        RETURNING granted
                        """, logger: logger) { applied = true }
                    if !applied {
                        try await conn.query("""
                            UPDATE quota_usage SET released = \(unescaped: Self.r) + \(dr), consumed = \(unescaped: Self.u) + \(du),
                              expired = \(unescaped: Self.e) + \(de), updated_at = \(t)
                            WHERE budget = \(b) AND window_start = \(w)
                            """, logger: logger)
                    }
                    accepted.append(applied || c.delta.granted <= 0)
                }
                return accepted
            }
        }
    }

    public func recordAuditHead(node: String, _ head: AuditHead, now: Instant) async throws {
        _ = try await bounded { [client, logger] in
            try await client.query("""
                INSERT INTO audit_heads (node, file, sequence, mac, reported_at)
                VALUES (\(node), \(head.file), \(head.sequence), \(head.mac), \(now.nanoseconds))
                ON CONFLICT (node) DO UPDATE SET file = excluded.file, sequence = excluded.sequence, mac = excluded.mac,
                  reported_at = excluded.reported_at
                WHERE excluded.sequence >= audit_heads.sequence
                """, logger: logger)
        }
    }

    public func auditHead(node: String) async throws -> AuditHead? {
        try await bounded { [client, logger] in
            var out: AuditHead?
            for try await (f, s, m) in try await client.query("SELECT file, sequence, mac FROM audit_heads WHERE node = \(node)", logger: logger)
                .decode((String, Int64, String).self) { out = AuditHead(file: f, sequence: s, mac: m) }
            return out
        }
    }

    public func head(of document: VersionedDocument) async throws -> DirectoryVersionRow? {
        try await bounded { [client, logger] in
            var out: DirectoryVersionRow?
            for try await (v, a, t, c, d) in try await client.query(PostgresQuery(unsafeSQL:
                "SELECT version, author, created_at, change, document FROM \(document.table) ORDER BY version DESC LIMIT 1"), logger: logger)
                .decode((Int64, String, Int64, String, String).self) {
                out = DirectoryVersionRow(version: v, author: a, created: Instant(nanoseconds: t), change: c, document: d)
            }
            return out
        }
    }

    public func append(_ row: DirectoryVersionRow, to document: VersionedDocument) async throws -> Bool {
        try await bounded { [client, logger] in
            var added = false
            // The NOTIFY in the same statement: sent at its commit, with it or not at all.
            var bindings = PostgresBindings()
            bindings.append(row.version)
            bindings.append(row.author)
            bindings.append(row.created.nanoseconds)
            bindings.append(row.change)
            bindings.append(row.document)
            for try await _ in try await client.query(PostgresQuery(unsafeSQL: """
                WITH ins AS (
                  INSERT INTO \(document.table) (version, author, created_at, change, document)
                  VALUES ($1, $2, $3, $4, $5)
                  ON CONFLICT DO NOTHING RETURNING version)
                SELECT pg_notify('\(VersionedDocument.channel)', version::text) FROM ins
                """, binds: bindings), logger: logger) { added = true }
            return added
        }
    }

    public func history(of document: VersionedDocument, limit: Int) async throws -> [DirectoryVersionRow] {
        try await bounded { [client, logger] in
            var out: [DirectoryVersionRow] = []
            for try await (v, a, t, c) in try await client.query(PostgresQuery(unsafeSQL:
                "SELECT version, author, created_at, change FROM \(document.table) ORDER BY version DESC LIMIT \(max(0, limit))"), logger: logger)
                .decode((Int64, String, Int64, String).self) {
                out.append(DirectoryVersionRow(version: v, author: a, created: Instant(nanoseconds: t), change: c, document: ""))
            }
            return out
        }
    }

    public func waitForVersions(timeout: Duration) async {
        let client = client
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: timeout) }
            group.addTask {
                // A connection of the pool, listening for this wait only (a notification sent
                // between two waits is found by the next read of the heads, at most `timeout` later).
                do {
                    try await client.withConnection { conn in
                        try await conn.listen(on: VersionedDocument.channel) { notifications in
                            for try await _ in notifications { return }
                        }
                    }
                } catch {
                    // No connection (the server is down): wait out the timeout instead.
                    try? await Task.sleep(for: timeout)
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Runs `body`, giving up after `timeout` (the pool waits for a connection otherwise).
    private func bounded<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let limit = timeout
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw LedgerError(.timeout, "PostgreSQL did not answer within \(limit)")
            }
            return value
        }
    }

    public func close() async {
        runner.cancel()
        _ = await runner.value
    }
}
