import AllotGateway
import AllotCore
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import AllotSimulator
import Synchronization

/// `allot demo`: a coordinator, N gateway nodes and the mock upstream in this process over
/// mutual TLS on loopback; a mixed workload (free, pro and agent consumers, one runaway
/// agent, streaming and not) for `duration`; a live table, a summary per consumer and budget
/// checked against the caps from the gateways' own timestamps, and an HTML report.
public struct DemoRunner: Sendable {
    public struct Options: Sendable {
        public var duration: Duration = .seconds(20)
        public var nodes = 3
        public var report: String? = "allot-demo-report.html"
        public var live = true
        public init() {}
    }

    /// One row of the summary: a consumer's budget, its cap, what was admitted and by how much
    /// the fleet went over (0 when the cap held).
    public struct Row: Sendable {
        public var consumer: String
        public var budget: String
        public var cap: String
        public var admitted: Int64
        public var denied: Int
        public var overshoot: Int64
        /// Concurrency: refusals while fewer requests than the limit were in flight fleet-wide
        /// (what one central counter would have admitted).
        public var deniedWithRoom: Int?
    }

    /// A consumer's token rate budget: its cap, and the tokens per second admitted by Allot and
    /// by the same traffic replayed through post-paid counting (`PostPaid`).
    public struct TokenRow: Sendable {
        public var consumer: String
        public var budget: String
        public var api: String
        /// The cap's rate in tokens per second, and its burst.
        public var capPerSecond: Double
        public var burst: Int64
        /// Tokens admitted per second of the run (charged what they finally cost), by Allot and by post-paid counting.
        public var allot: [Int64]
        public var postPaid: [Int64]
        public var allotOvershoot: Int64
        public var postPaidOvershoot: Int64
    }

    public struct Result: Sendable {
        public var rows: [Row]
        public var tokenRows: [TokenRow] = []
        public var requests: Int
        public var admitted: Int
        public var messagesPer1k: Double
        public var runawayFlagged: [String]
        public var reportPath: String?
        public var totalOvershoot: Int64 { rows.reduce(0) { $0 + $1.overshoot } }
    }

    public let options: Options
    public init(options: Options) { self.options = options }

    final class Tally: Sendable {
        struct PerConsumer: Sendable {
            var sent = 0
            var ok = 0
            var denied: [String: Int] = [:]
        }
        let byConsumer = Mutex<[String: PerConsumer]>([:])
        let events = Mutex<[GatewayEvent]>([])
        /// Every request sent, for the post-paid replay.
        let offered = Mutex<[PostPaid.Offered]>([])
        func observe(_ e: GatewayEvent) { events.withLock { $0.append(e) } }
        func record(_ consumer: String, status: Int, code: String?) {
            byConsumer.withLock { m in
                var c = m[consumer] ?? PerConsumer()
                c.sent += 1
                if status == 200 { c.ok += 1 } else if status == 429 || status == 503 { c.denied[code ?? "\(status)", default: 0] += 1 }
                m[consumer] = c
            }
        }
    }

    public func run(print: @escaping @Sendable (String) -> Void) async throws -> Result {
        let config = try GatewayConfig(yaml: DemoScript.configYAML)
        let consumers = try ConsumerDirectory(yaml: DemoScript.consumersYAML, tiers: Set(config.shared.tiers.map(\.name)))
        let tally = Tally()
        var mock = MockUpstream.Settings()
        mock.chunkInterval = .milliseconds(3)
        // ALLOT_DEMO_LOG_LEVEL=info shows the fleet's own log lines (quiet by default).
        let level = ProcessInfo.processInfo.environment["ALLOT_DEMO_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: options.nodes, mock: mock,
                                               logLevel: level, observer: { tally.observe($0) })
        try? DemoScript.configYAML.write(to: fleet.directory.appendingPathComponent("allot.yaml"), atomically: true, encoding: .utf8)
        print("allot demo: coordinator on 127.0.0.1:\(fleet.coordinatorPort) (mTLS), gateways on \(fleet.proxyPorts.map { "127.0.0.1:\($0)" }.joined(separator: ", ")), mock upstream on 127.0.0.1:\(fleet.mockPort ?? 0)")
        print("running a \(options.duration.components.seconds)-second mixed workload: \(DemoScript.actors.map { "\($0.id) (\($0.tier))" }.joined(separator: ", "))\n")
        var http = HTTPClient.Configuration()
        http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 128
        http.timeout = .init(connect: .seconds(2), read: .seconds(10))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        let start = ContinuousClock.now
        let startInstant = fleet.gateways[0].core.now()
        let gatewayClock = fleet.gateways[0].core
        let total = options.duration
        let ports = fleet.proxyPorts
        let live = options.live
        await withTaskGroup(of: Void.self) { group in
            for actor in DemoScript.actors {
                group.addTask {
                    await Self.drive(actor, ports: ports, client: client, start: start, total: total, tally: tally, clock: { gatewayClock.now() })
                }
            }
            group.addTask {
                var second = 0
                while ContinuousClock.now - start < total {
                    try? await Task.sleep(for: .seconds(1))
                    second += 1
                    if live { print(Self.liveTable(tally, second: second)) }
                }
            }
        }
        try? await client.shutdown()
        await fleet.stop()
        let traffic = fleet.gateways.reduce(0) { $0 + $1.leaseClient.traffic.framesSent + $1.leaseClient.traffic.framesReceived }
        let result = try summarize(config: config, consumers: consumers, tally: tally, traffic: traffic,
                                   start: startInstant, seconds: Int(total.components.seconds))
        print(Self.summaryTable(result))
        var r = result
        if let path = options.report {
            try DemoReport.html(result: result, events: tally.events.withLock { $0 }, nodes: fleet.gateways.map { $0.core.node },
                                start: startInstant, seconds: Int(total.components.seconds), config: config)
                .write(toFile: path, atomically: true, encoding: .utf8)
            r.reportPath = path
            print("report: \(path)   audit trails: \(fleet.directory.path)/audit-gw-*   (allot audit verify / summary)")
        }
        return r
    }

    static func drive(_ a: DemoScript.Actor, ports: [Int], client: HTTPClient, start: ContinuousClock.Instant, total: Duration, tally: Tally,
                      clock: @escaping @Sendable () -> Instant) async {
        await withTaskGroup(of: Void.self) { group in
            var n = 0
            var next = start
            while true {
                let now = ContinuousClock.now
                let elapsed = now - start
                guard elapsed < total else { break }
                let progress = Double(elapsed.components.seconds) / Double(total.components.seconds)
                if next > now { try? await Task.sleep(until: next, clock: .continuous) }
                next = next + .milliseconds(Int64(1000 / max(0.1, a.rate(progress))))
                n += 1
                let i = n
                group.addTask {
                    var req = HTTPClientRequest(url: "http://127.0.0.1:\(ports[i % ports.count])\(a.api.path)")
                    req.method = .POST
                    if a.api == .messages {
                        // As Anthropic's clients send it.
                        req.headers.add(name: "x-api-key", value: a.key)
                        req.headers.add(name: "anthropic-version", value: "2023-06-01")
                    } else {
                        req.headers.add(name: "authorization", value: "Bearer \(a.key)")
                    }
                    req.headers.add(name: "content-type", value: "application/json")
                    let completion = a.completionTokens + (i * 37) % 50
                    req.headers.add(name: "x-mock-completion-tokens", value: "\(completion)")
                    req.headers.add(name: "x-mock-latency-ms", value: "\(a.latencyMs)")
                    if let d = a.chainDepth { req.headers.add(name: "x-allot-chain-depth", value: "\(d)") }
                    let stream = i % a.streamEvery == 0
                    let body = a.api.body(model: a.model, maxTokens: a.maxTokens, stream: stream,
                                          text: "Request \(i) from \(a.id): summarise the quarterly numbers.")
                    req.body = .bytes(ByteBuffer(string: body))
                    // What the mock charges for it (prompt bytes ÷ 4, its completion tokens capped by max_tokens).
                    var offered = PostPaid.Offered(consumer: a.id, at: clock(), tokens: Int64((body.utf8.count + 3) / 4 + min(completion, a.maxTokens)))
                    let sent = ContinuousClock.now
                    do {
                        let r = try await client.execute(req, timeout: .seconds(10))
                        var text = ""
                        for try await chunk in r.body where r.status.code != 200 { text += String(buffer: chunk) }
                        if r.status.code == 200 {
                            let d = (ContinuousClock.now - sent).components
                            offered.seconds = Double(d.seconds) + Double(d.attoseconds) / 1e18
                        }
                        tally.offered.withLock { $0.append(offered) }
                        // What denied: the budget's template (`free.rpm`), else the error code.
                        let error = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
                            .flatMap { $0["error"] as? [String: Any] }
                        let budget = (error?["budget"] as? String).map { String($0.prefix { $0 != "/" }) }
                        tally.record(a.id, status: Int(r.status.code), code: budget ?? error?["code"] as? String)
                    } catch {
                        tally.offered.withLock { $0.append(offered) }
                        tally.record(a.id, status: 0, code: nil)
                    }
                }
            }
        }
    }

    static func liveTable(_ tally: Tally, second: Int) -> String {
        let m = tally.byConsumer.withLock { $0 }
        var lines = ["\u{1B}[2J\u{1B}[H allot demo — t=\(second)s", "",
                     pad("consumer", 10) + pad("api", 11) + pad("sent", 8) + pad("ok", 8) + pad("denied", 8) + "denied by"]
        for a in DemoScript.actors {
            let c = m[a.id] ?? Tally.PerConsumer()
            let by = c.denied.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append(pad(a.id, 10) + pad(a.api.rawValue, 11) + pad("\(c.sent)", 8) + pad("\(c.ok)", 8) + pad("\(c.denied.values.reduce(0, +))", 8) + by)
        }
        return lines.joined(separator: "\n")
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    static func summaryTable(_ r: Result) -> String {
        var lines = ["", "summary (caps checked fleet-wide from the gateways' own timestamps)", "",
                     pad("consumer", 10) + pad("budget", 30) + pad("cap", 28) + pad("admitted", 10) + pad("denied", 8) + "overshoot"]
        for row in r.rows {
            lines.append(pad(row.consumer, 10) + pad(row.budget, 30) + pad(row.cap, 28) + pad("\(row.admitted)", 10)
                         + pad("\(row.denied)", 8) + "\(row.overshoot)")
        }
        let withRoom = r.rows.compactMap { row in row.deniedWithRoom.map { "\(row.consumer) \($0) of \(row.denied)" } }
        if !withRoom.isEmpty {
            lines.append("concurrency refusals with fewer than the limit in flight fleet-wide (a central counter admits them): "
                         + withRoom.joined(separator: ", "))
        }
        if !r.tokenRows.isEmpty {
            lines += ["", "tokens per second against each token cap; post-paid: the same requests counted after they end (Envoy AI Gateway, Kong, LiteLLM)", "",
                      pad("consumer", 10) + pad("api", 11) + pad("cap tok/s", 11) + pad("allot mean", 12) + pad("peak 1s", 9) + pad("overshoot", 11)
                      + pad("post-paid mean", 16) + pad("peak 1s", 9) + "overshoot"]
            for t in r.tokenRows {
                lines.append(pad(t.consumer, 10) + pad(t.api, 11) + pad(String(format: "%.0f", t.capPerSecond), 11)
                             + pad(String(format: "%.0f", Self.mean(t.allot)), 12) + pad("\(t.allot.max() ?? 0)", 9) + pad("\(t.allotOvershoot)", 11)
                             + pad(String(format: "%.0f", Self.mean(t.postPaid)), 16) + pad("\(t.postPaid.max() ?? 0)", 9) + "\(t.postPaidOvershoot)")
            }
        }
        lines.append("")
        lines.append("requests \(r.requests), admitted \(r.admitted); coordinator messages per 1,000 requests: \(String(format: "%.1f", r.messagesPer1k))")
        lines.append("runaway flagged: \(r.runawayFlagged.isEmpty ? "none" : r.runawayFlagged.joined(separator: ", "));  total overshoot: \(r.totalOvershoot)")
        return lines.joined(separator: "\n")
    }

    static func mean(_ values: [Int64]) -> Double { values.isEmpty ? 0 : Double(values.reduce(0, +)) / Double(values.count) }

    func summarize(config: GatewayConfig, consumers: ConsumerDirectory, tally: Tally, traffic: Int, start: Instant, seconds: Int) throws -> Result {
        let events = tally.events.withLock { $0 }
        let catalog = try config.catalog
        var rows: [Row] = []
        for a in DemoScript.actors {
            guard let entry = consumers.lookup(consumer: a.id) else { continue }
            for spec in try catalog.budgets(for: entry.consumer, route: a.api.rawValue, model: a.model)
            where !rows.contains(where: { $0.budget == spec.id.rawValue }) {
                // A team's budget is shared: replay every consumer of the team.
                let members = spec.key[.consumer] != nil ? [a.id]
                    : DemoScript.actors.filter { spec.key[.team] == nil || $0.team == spec.key[.team] }.map(\.id)
                let checker = BudgetChecker.replay(events, consumers: Set(members), spec: spec)
                let charged = events.filter { $0.kind == .settle && members.contains($0.consumer) }
                    .reduce(Int64(0)) { $0 + spec.amount(for: $1.cost ?? Cost()) }
                let cap: String
                switch spec.kind {
                case .rate(let limit, let period, let burst): cap = "\(limit)/\(period.components.seconds)s, burst \(burst)"
                case .quota(let allowance, let window): cap = "\(allowance)/\(window.period.rawValue)"
                case .concurrency(let limit): cap = "\(limit) in flight"
                }
                let denials = events.filter { $0.kind == .deny && $0.consumer == a.id && $0.budget == spec.id.rawValue }
                var withRoom: Int?
                if case .concurrency(let limit) = spec.kind {
                    withRoom = Self.refusedWithRoom(denials, events: events, consumers: Set(members), limit: limit)
                }
                rows.append(Row(consumer: a.id, budget: spec.id.rawValue, cap: cap, admitted: charged,
                                denied: denials.count, overshoot: checker.excess, deniedWithRoom: withRoom))
            }
        }
        let offered = tally.offered.withLock { $0 }
        var tokenRows: [TokenRow] = []
        for a in DemoScript.actors {
            guard let entry = consumers.lookup(consumer: a.id) else { continue }
            let specs = try catalog.budgets(for: entry.consumer, route: a.api.rawValue, model: a.model).filter { $0.key[.consumer] != nil }
            guard let tpm = specs.first(where: { $0.unit == .tokens && $0.kind.name == "rate" }),
                  case .rate(let limit, let period, let burst) = tpm.kind else { continue }
            let rpm = specs.first { $0.unit == .requests && $0.kind.name == "rate" }
            let allot = Self.perSecond(DemoReport.admitted(events, consumer: a.id).map { ($0.at, tpm.amount(for: $0.cost)) }, start: start, seconds: seconds)
            let replayed = PostPaid.replay(offered.filter { $0.consumer == a.id }, tokens: tpm, requests: rpm)
            tokenRows.append(TokenRow(consumer: a.id, budget: tpm.id.rawValue, api: a.api.rawValue,
                                      capPerSecond: Double(limit) / period.secondsDouble, burst: burst,
                                      allot: allot, postPaid: Self.perSecond(replayed.map { ($0.at, $0.tokens) }, start: start, seconds: seconds),
                                      allotOvershoot: rows.first { $0.budget == tpm.id.rawValue }?.overshoot ?? 0,
                                      postPaidOvershoot: PostPaid.overshoot(replayed, spec: tpm)))
        }
        let requests = tally.byConsumer.withLock { $0 }.values.reduce(0) { $0 + $1.sent }
        let flagged = DemoScript.actors.map(\.id).filter { id in events.contains { $0.consumer == id && $0.budget == "runaway/consumer=\(id)" } }
        return Result(rows: rows, tokenRows: tokenRows, requests: requests, admitted: events.filter { $0.kind == .admit }.count,
                      messagesPer1k: requests > 0 ? Double(traffic) * 1000 / Double(requests) : 0, runawayFlagged: flagged, reportPath: nil)
    }
}

extension DemoRunner {
    /// How many of `denials` came while fewer than `limit` of `consumers`' requests were in
    /// flight fleet-wide (admitted, not yet settled), by the gateways' own timestamps.
    static func refusedWithRoom(_ denials: [GatewayEvent], events: [GatewayEvent], consumers: Set<String>, limit: Int64) -> Int {
        var ends: [String: Instant] = [:]
        for e in events where e.kind == .settle && consumers.contains(e.consumer) { ends["\(e.node)#\(e.id)"] = e.time }
        let spans = events.filter { $0.kind == .admit && consumers.contains($0.consumer) }
            .map { (start: $0.time, end: ends["\($0.node)#\($0.id)"] ?? .distantFuture) }
        return denials.filter { d in Int64(spans.filter { $0.start <= d.time && d.time < $0.end }.count) < limit }.count
    }

    /// Amounts summed per second of the run, by when they were admitted.
    static func perSecond(_ amounts: [(at: Instant, amount: Int64)], start: Instant, seconds: Int) -> [Int64] {
        var out = Array(repeating: Int64(0), count: max(1, seconds))
        for (at, amount) in amounts {
            let s = Int((at.nanoseconds - start.nanoseconds) / 1_000_000_000)
            if s >= 0 && s < out.count { out[s] += amount }
        }
        return out
    }
}
