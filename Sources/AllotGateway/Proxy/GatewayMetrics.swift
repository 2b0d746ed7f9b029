import AllotCore
import Prometheus

/// The gateway's `/metrics`: requests and tokens by consumer, tier, model and decision;
/// reservation error; upstream latency; time to first byte of streams; runaway flags.
public final class GatewayMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]
    private static let admissionBuckets: [Duration] = [
        .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500),
    ]
    private let upstreamLatency: DurationHistogram
    private let admissionTime: DurationHistogram
    private let firstByte: DurationHistogram
    private let inflight: Gauge

    public init() {
        upstreamLatency = registry.makeDurationHistogram(descriptor: .init(metricName: "allot_gateway_upstream_latency_seconds", unitName: "", helpText: "From forwarding a request to the upstream's last byte"), buckets: Self.latencyBuckets)
        firstByte = registry.makeDurationHistogram(descriptor: .init(metricName: "allot_gateway_stream_first_byte_seconds", unitName: "", helpText: "From forwarding a streaming request to its first body byte"), buckets: Self.latencyBuckets)
        admissionTime = registry.makeDurationHistogram(descriptor: .init(metricName: "allot_gateway_admission_seconds", unitName: "", helpText: "The gateway's decision: from the admission check to a reservation or a denial (waits for a lease included)"), buckets: Self.admissionBuckets)
        inflight = registry.makeGauge(descriptor: .init(metricName: "allot_gateway_inflight_requests", unitName: "", helpText: "Requests forwarded and not yet settled"))
    }

    /// `decision`: admit, deny (a budget), reject (identity, entitlement or bad input).
    public func request(consumer: String, tier: String, model: String?, decision: String) {
        counter("allot_gateway_requests_total", "Requests by consumer, tier, model and decision", [("consumer", consumer), ("tier", tier), ("model", model ?? "-"), ("decision", decision)]).increment()
    }

    public func settled(consumer: String, tier: String, model: String?, input: Int64, output: Int64, reserved: Int64) {
        let m = model ?? "-"
        for (direction, n) in [("input", input), ("output", output)] where n > 0 {
            counter("allot_gateway_tokens_total", "Tokens settled, by consumer, tier, model and direction", [("consumer", consumer), ("tier", tier), ("model", m), ("direction", direction)]).increment(by: n)
        }
        let error = Checked.sum(reserved, -Checked.sum(input, output))
        counter("allot_gateway_reservation_error_tokens_total", "Tokens reserved but not used (reserved - settled), refunded at settlement", [("tier", tier), ("model", m)])
            .increment(by: max(0, error))
        if error < 0 {
            counter("allot_gateway_settled_above_bound_total", "Settlements above their reservation (upstream reported more than the bound)", [("tier", tier), ("model", m)]).increment()
        }
    }

    public func upstream(latency: Duration) { upstreamLatency.record(latency) }
    /// The gateway's own decision time: from the request's admission check to its reservation.
    public func admission(_ d: Duration) { admissionTime.record(d) }

    /// A request denied by `budget` (labelled by its template, `pro.tpm`, or explicit id:
    /// one series per template, not per consumer).
    public func denied(budget: BudgetID, tier: String, after d: Duration) {
        admissionTime.record(d)
        let template = budget.rawValue.split(separator: "/", maxSplits: 1).first.map(String.init) ?? budget.rawValue
        counter("allot_gateway_denied_total", "Requests denied by a budget, by budget template and tier", [("budget", template), ("tier", tier)]).increment()
    }
    public func streamFirstByte(_ d: Duration) { firstByte.record(d) }
    public func inflight(_ delta: Int) { inflight.increment(by: Double(delta)) }

    /// Shadow mode: a request a shadow budget would have denied, let through.
    public func wouldDeny(budget: String, tier: String) {
        counter("allot_gateway_would_deny_total", "Requests let through that a budget in shadow mode would have denied, by budget", [("budget", budget), ("tier", tier)]).increment()
    }

    /// The ledger's consumer directory as applied: its version, consumers and keys; consumers
    /// left out because this gateway does not know their tier.
    public func directory(version: UInt64, consumers: Int, keys: Int, skipped: Int) {
        func gauge(_ name: String, _ help: String) -> Gauge { registry.makeGauge(descriptor: .init(metricName: name, unitName: "", helpText: help)) }
        gauge("allot_gateway_directory_version", "The consumer directory version applied (from the coordinators)").set(Int64(clamping: version))
        gauge("allot_gateway_directory_consumers", "Consumers in the applied directory").set(Int64(consumers))
        gauge("allot_gateway_directory_keys", "API keys in the applied directory").set(Int64(keys))
        if skipped > 0 { counter("allot_gateway_directory_skipped_consumers_total", "Directory consumers left out: their tier is not configured on this gateway", []).increment(by: Int64(skipped)) }
    }

    /// A directory from a coordinator (or the cache) that could not be read or kept.
    public func directoryUnreadable() {
        counter("allot_gateway_directory_unreadable_total", "Consumer directories received that could not be read or cached", []).increment()
    }

    /// The policy version applied (budgets, tiers, models from the coordinators; 0: the file's).
    public func policy(version: UInt64) {
        registry.makeGauge(descriptor: .init(metricName: "allot_gateway_policy_version", unitName: "",
                                             helpText: "The policy version applied (budgets, tiers, models from the coordinators; 0: the file's)"))
            .set(Int64(clamping: version))
    }

    /// A policy from a coordinator (or the cache) that could not be read, applied or kept.
    public func policyUnreadable() {
        counter("allot_gateway_policy_unreadable_total", "Policies received that could not be read, applied or cached", []).increment()
    }

    /// A directory applied but not written to `gateway.directory_cache`.
    public func directoryCacheFailed() {
        counter("allot_gateway_directory_cache_failures_total", "Consumer directories applied but not written to the cache", []).increment()
    }

    public func runaway(consumer: String, tier: String) {
        counter("allot_gateway_runaway_flags_total", "Times a consumer was flagged as a runaway (rate above its own baseline)", [("consumer", consumer), ("tier", tier)]).increment()
    }

    /// Requests refused before a consumer is known (a non-canonical path).
    public func rejected(_ code: String) {
        counter("allot_gateway_rejected_total", "Requests refused before authentication, by reason", [("code", code)]).increment()
    }

    /// Sidecar calls refused: no token, a wrong token, or the sidecar off.
    public func sidecarRefused(_ reason: String) {
        counter("allot_gateway_sidecar_refused_total", "Sidecar calls refused before anything was reserved, by reason", [("reason", reason)]).increment()
    }

    /// Client connections closed by a timeout (`kind`: header, body, idle), by listener.
    public func clientTimeout(listener: String, kind: String) {
        counter("allot_gateway_client_timeouts_total", "Client connections closed for a slow request head or body, or idleness", [("listener", listener), ("kind", kind)]).increment()
    }

    public func upstreamError(_ kind: String) {
        counter("allot_gateway_upstream_errors_total", "Upstream calls that failed: refused, timeout, cut", [("kind", kind)]).increment()
    }

    public func render() -> String { registry.emitToString() }

    private func counter(_ name: String, _ help: String, _ labels: [(String, String)]) -> Counter {
        registry.makeCounter(descriptor: .init(metricName: name, unitName: "", helpText: help), labels: labels)
    }
}
