import AllotCore
import AllotTransport
import AllotWire
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// Plain HTTP on the admin address (loopback by default), served by Hummingbird as the
/// gateway's listeners are: `/metrics` (Prometheus text), `/healthz` (the process is up) and
/// `/readyz` (it accepts lease traffic).
public final class AdminServer: Sendable {
    private let core: CoordinatorCore
    private let group: any EventLoopGroup
    private let ready: @Sendable () -> Bool
    private let logger: Logger
    private let task = Mutex<Task<Void, Never>?>(nil)

    public init(core: CoordinatorCore, group: any EventLoopGroup, ready: @escaping @Sendable () -> Bool,
                logger: Logger = Logger(label: "allot.admin")) {
        self.core = core
        self.group = group
        self.ready = ready
        _ = Self.started
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        self.logger = quiet
    }

    /// The admin listener as a `Service` for the coordinator's `ServiceGroup`: binds, calls
    /// `onBound` with the bound address (port 0 picks a free port), serves until graceful
    /// shutdown.
    public func service(host: String, port: Int, onBound: @escaping @Sendable (SocketAddress) -> Void) -> some Service {
        let core = self.core, ready = self.ready
        return Application(
            responder: LibraryMetrics.counted(route: { ["/metrics", "/healthz", "/readyz"].contains($0.uri.path) ? $0.uri.path : "other" }) {
                (request: Request, _: BasicRequestContext) in Self.respond(request.uri.path, core: core, ready: ready)
            },
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                if let address = channel.localAddress { onBound(address) }
            },
            eventLoopGroupProvider: .shared(group), logger: logger)
    }

    /// Binds and serves until `shutdown`; returns the bound address (port 0 picks a free port).
    @discardableResult
    public func start(host: String, port: Int) async throws -> SocketAddress {
        let (bound, signal) = AsyncStream<Result<SocketAddress, any Error>>.makeStream()
        let logger = self.logger
        let app = service(host: host, port: port) { signal.yield(.success($0)) }
        task.withLock { $0 = Task {
            do { try await ServiceGroup(services: [app], gracefulShutdownSignals: [], logger: logger).run() } catch { signal.yield(.failure(error)) }
            signal.finish()
        } }
        for await result in bound { return try result.get() }
        throw AllotError(.invalidSettings, "the admin listener on \(host):\(port) stopped before it was bound")
    }

    public func shutdown() async {
        guard let t = task.withLock({ t -> Task<Void, Never>? in defer { t = nil }; return t }) else { return }
        t.cancel()
        await t.value
    }

    static func respond(_ path: String, core: CoordinatorCore, ready: () -> Bool) -> Response {
        let (status, body, type): (HTTPResponse.Status, String, String)
        switch path {
        case "/metrics": (status, body, type) = (.ok, metricsText(core), "text/plain; version=0.0.4")
        case "/healthz": (status, body, type) = (.ok, "ok\n", "text/plain")
        case "/readyz": (status, body, type) = ready() ? (.ok, "ready\n", "text/plain") : (.serviceUnavailable, "not ready\n", "text/plain")
        default: (status, body, type) = (.notFound, "not found: try /metrics, /healthz or /readyz\n", "text/plain")
        }
        return Response(status: status, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// The Prometheus exposition of the coordinator's counters and books.
    /// When this process started (set when the first admin server is made, at start).
    static let started = WallClock.now().nanoseconds / 1_000_000_000
    public static func metricsText(_ core: CoordinatorCore) -> String {
        let registry = PrometheusCollectorRegistry()
        let c = core.counters
        registry.makeCounter(descriptor: .init(metricName: "allot_grants_total", unitName: "", helpText: "Acquires answered with a grant")).increment(by: c.grants)
        registry.makeCounter(descriptor: .init(metricName: "allot_granted_units_total", unitName: "", helpText: "Units moved from the pool to nodes")).increment(by: c.grantedUnits)
        registry.makeCounter(descriptor: .init(metricName: "allot_releases_total", unitName: "", helpText: "Releases and reports applied")).increment(by: c.releases)
        registry.makeCounter(descriptor: .init(metricName: "allot_pushes_total", unitName: "", helpText: "Offers and recalls pushed to nodes")).increment(by: c.pushes)
        registry.makeGauge(descriptor: .init(metricName: "allot_connected_nodes", unitName: "", helpText: "Nodes with an open connection")).set(Int64(core.connectedNodes))
        registry.makeGauge(descriptor: .init(metricName: "allot_serving", unitName: "", helpText: "1 while grants are served (standalone, or a cluster member with its quorum); 0: quorum lost")).set(Int64(core.isServing ? 1 : 0))
        registry.makeGauge(descriptor: .init(metricName: "allot_start_time_seconds", unitName: "", helpText: "When this coordinator process started (Unix seconds)")).set(Self.started)
        for (kind, n) in c.framesIn.sorted(by: { $0.key < $1.key }) {
            registry.makeCounter(descriptor: .init(metricName: "allot_frames_received_total", unitName: "", helpText: "Frames received"), labels: [("type", kind)]).increment(by: n)
        }
        for (reason, n) in c.rejected.sorted(by: { $0.key < $1.key }) {
            registry.makeCounter(descriptor: .init(metricName: "allot_rejected_total", unitName: "", helpText: "Frames or items refused"), labels: [("reason", reason)]).increment(by: n)
        }
        for (reason, n) in c.handshakeFailures.sorted(by: { $0.key < $1.key }) {
            registry.makeCounter(descriptor: .init(metricName: "allot_handshake_failures_total", unitName: "", helpText: "TLS handshakes that failed"), labels: [("reason", reason)]).increment(by: n)
        }
        for (reason, n) in c.frameErrors.sorted(by: { $0.key < $1.key }) {
            registry.makeCounter(descriptor: .init(metricName: "allot_frame_errors_total", unitName: "", helpText: "Unreadable frames"), labels: [("reason", reason)]).increment(by: n)
        }
        for (reason, n) in c.closedByLimit.sorted(by: { $0.key < $1.key }) {
            registry.makeCounter(descriptor: .init(metricName: "allot_connections_closed_total", unitName: "", helpText: "Connections closed by a limit: handshake, hello or idle timeout, connection caps, refused frames, a frame that could not be sent"), labels: [("reason", reason)]).increment(by: n)
        }
        registry.makeCounter(descriptor: .init(metricName: "allot_audit_heads_total", unitName: "", helpText: "Audit heads received from gateways (kept in the ledger)")).increment(by: c.auditHeads)
        registry.makeCounter(descriptor: .init(metricName: "allot_tier_budgets_made_total", unitName: "", helpText: "Budgets made from tier templates on first use")).increment(by: c.tierBudgetsMade)
        registry.makeCounter(descriptor: .init(metricName: "allot_tier_budgets_retired_total", unitName: "", helpText: "Idle tier budgets retired (their ledger rows kept)")).increment(by: c.tierBudgetsRetired)
        registry.makeCounter(descriptor: .init(metricName: "allot_backpressure_pauses_total", unitName: "", helpText: "Times reading from a peer stopped because its unsent replies passed the write watermark")).increment(by: c.backpressurePauses)
        registry.makeCounter(descriptor: .init(metricName: "allot_redirects_total", unitName: "", helpText: "Acquires for budgets another coordinator owns, answered with the owner")).increment(by: c.redirects)
        registry.makeCounter(descriptor: .init(metricName: "allot_ownership_gained_total", unitName: "", helpText: "Budgets taken over (learning mode, new epoch)")).increment(by: c.ownershipGained)
        registry.makeCounter(descriptor: .init(metricName: "allot_ownership_lost_total", unitName: "", helpText: "Budgets handed to another coordinator")).increment(by: c.ownershipLost)
        registry.makeCounter(descriptor: .init(metricName: "allot_ledger_refused_grants_total", unitName: "", helpText: "Grants the ledger refused under the cap")).increment(by: c.ledgerRefusals)
        registry.makeCounter(descriptor: .init(metricName: "allot_node_restarts_total", unitName: "", helpText: "Hellos from a new life of a known node (its previous life's leases run out as they are)")).increment(by: c.nodeRestarts)
        registry.makeCounter(descriptor: .init(metricName: "allot_ledger_revoked_grants_total", unitName: "", helpText: "Grants taken back because their record was refused or not written")).increment(by: c.ledgerRevoked)
        registry.makeCounter(descriptor: .init(metricName: "allot_upstream_units_total", unitName: "", helpText: "A region: units of global budgets granted by the global cluster")).increment(by: c.upstreamUnits)
        registry.makeCounter(descriptor: .init(metricName: "allot_late_settlements_total", unitName: "", helpText: "Lapsed quota leases settled late (a region back after a cut)")).increment(by: c.lateSettlements)
        registry.makeCounter(descriptor: .init(metricName: "allot_late_settled_units_total", unitName: "", helpText: "Units returned to the pool by late settlements")).increment(by: c.lateSettledUnits)
        if let l = core.ledger?.stats {
            registry.makeCounter(descriptor: .init(metricName: "allot_ledger_commits_total", unitName: "", helpText: "Ledger transactions (group commits)")).increment(by: l.commits)
            registry.makeCounter(descriptor: .init(metricName: "allot_ledger_rows_total", unitName: "", helpText: "Budget-window rows written")).increment(by: l.changes)
            registry.makeCounter(descriptor: .init(metricName: "allot_ledger_failures_total", unitName: "", helpText: "Ledger writes that failed")).increment(by: l.failures)
            registry.makeGauge(descriptor: .init(metricName: "allot_ledger_healthy", unitName: "", helpText: "1 when the last ledger write succeeded")).set(Int64(l.healthy ? 1 : 0))
        }
        if core.settings.member != nil {
            registry.makeGauge(descriptor: .init(metricName: "allot_cluster_members", unitName: "", helpText: "Live coordinators in this one's view")).set(Int64(core.members.list.count))
        }
        return registry.emitToString() + budgetLines(core.budgetStatuses()) + softLimitLines(core) + LibraryMetrics.registry.emitToString()
    }

    /// `allot_soft_limit_crossings_total{budget,percent}` and, per budget above one of its
    /// soft limits in its current window, `allot_budget_soft_limit_percent{budget}`.
    static func softLimitLines(_ core: CoordinatorCore) -> String {
        let counts = core.softLimitCounts()
        let levels = core.softLimitLevels(now: WallClock.now())
        var out = "# HELP allot_soft_limit_crossings_total Soft limits crossed (each percent once per window)\n# TYPE allot_soft_limit_crossings_total counter\n"
        for (budget, byPercent) in counts.sorted(by: { $0.key < $1.key }) {
            for (p, n) in byPercent.sorted(by: { $0.key < $1.key }) {
                out += "allot_soft_limit_crossings_total{budget=\"\(label(budget.rawValue))\",percent=\"\(p)\"} \(n)\n"
            }
        }
        out += "# HELP allot_budget_soft_limit_percent The highest soft limit (percent) a budget crossed in its current window\n# TYPE allot_budget_soft_limit_percent gauge\n"
        for l in levels { out += "allot_budget_soft_limit_percent{budget=\"\(label(l.budget.rawValue))\"} \(l.percent)\n" }
        return out
    }

    /// A label value escaped for the Prometheus text format.
    static func label(_ s: String) -> String {
        var out = ""
        append(label: s, to: &out)
        return out
    }

    /// Appends `s` escaped as a label value (no string made per budget).
    static func append(label s: String, to out: inout String) {
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
    }

    /// The per-budget gauges, written straight out: a coordinator may hold tens of thousands
    /// of budgets, and a registry entry per gauge made `/metrics` take seconds.
    static func budgetLines(_ budgets: [Allot_V1_BudgetStatus]) -> String {
        let gauges: [(String, String, (Allot_V1_BudgetStatus) -> Int64)] = [
            ("allot_budget_outstanding", "Units (or capacity) out on leases", { (b: Allot_V1_BudgetStatus) -> Int64 in b.outstanding }),
            ("allot_budget_limit", "The budget's limit (a rate's per period, a quota's allowance, a concurrency limit)", { (b: Allot_V1_BudgetStatus) -> Int64 in b.limit }),
            ("allot_budget_pool", "Units free at the coordinator", { (b: Allot_V1_BudgetStatus) -> Int64 in b.pool }),
            ("allot_budget_consumed", "Units reported consumed (this window)", { (b: Allot_V1_BudgetStatus) -> Int64 in b.consumed }),
            ("allot_budget_holders", "Nodes holding a lease", { (b: Allot_V1_BudgetStatus) -> Int64 in Int64(b.holders) }),
        ]
        guard !budgets.isEmpty else { return "" }
        var out = ""
        out.reserveCapacity(budgets.count * gauges.count * 64)
        for (name, help, value) in gauges {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n"
            for b in budgets {
                out += name
                out += "{budget=\""
                append(label: b.budget, to: &out)
                out += "\"} \(value(b))\n"
            }
        }
        return out
    }
}
