import AllotConfig
import AllotCoordinator
import AllotCore
import AllotNode
import AllotSimulator
import AllotTransport
import ArgumentParser
import Foundation
import Logging
import NIOPosix

/// `allot bench-node`: one gateway node of the real-process benchmark (bench/real). It replays
/// its share of a demand trace in real time against one fleet-wide rate budget, deciding each
/// request with one strategy — Allot's node library, or a peer's approach against a real Redis —
/// and writes every attempt (time, cost, decision) plus a JSON summary with decision latency.
///
/// The `tokens` trace is LLM-like: each request's real token count is known only when it ends
/// (0.5–8 s later, so many are in flight); at admission only a bound is (its max_tokens, 1–2×
/// the real count). Allot, static-split and redis-bucket reserve the bound and give back the
/// difference at the end (LiteLLM's central reservation is redis-bucket's shape); redis-window
/// and redis-sync count post-paid, as Envoy AI Gateway and Kong's AI rate limiting do: admit
/// while the counter is under the limit, add the real count when the request ends.
struct BenchNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "One node of the real-process benchmark: replay a trace against a strategy (bench/real/run.sh drives it).")

    enum Strategy: String, ExpressibleByArgument, CaseIterable {
        case allot
        /// A fixed window per second in Redis: INCRBY + expiry in one script per request (envoyproxy/ratelimit).
        case redisWindow = "redis-window"
        /// An exact token bucket in Redis: one script per request.
        case redisBucket = "redis-bucket"
        /// Local counters pushed to Redis every --sync-ms (Kong's redis policy with sync_rate).
        case redisSync = "redis-sync"
        /// limit/N per node, no coordination.
        case staticSplit = "static-split"
    }

    enum Pattern: String, ExpressibleByArgument, CaseIterable {
        case steady, skewed, shift, burst, tokens
    }

    @Option(help: "allot, redis-window, redis-bucket, redis-sync or static-split.") var strategy: Strategy
    @Option(help: "steady, skewed (Zipf across nodes), shift (a hot node moving every 3 s), burst (4× for 500 ms every 5 s), tokens (costs of 50–5,000 tokens).") var pattern: Pattern
    @Option(help: "This node's index in the fleet (0-based).") var index: Int
    @Option(help: "Nodes in the fleet.") var fleet: Int
    @Option(help: "Mean requests per second per node.") var rate: Double
    @Option(help: "Seconds to run.") var seconds: Double
    @Option(help: "The fleet-wide limit, units per second.") var limit: Int64
    @Option(help: "The burst, units.") var burst: Int64
    @Option(help: "Trace seed (the same for every strategy).") var seed: UInt64 = 1
    @Option(help: "Where to write every attempt: `nanoseconds cost admitted decision-nanoseconds` lines.") var out: String
    @Option(help: "redis-*: HOST:PORT.") var redis = "127.0.0.1:6379"
    @Option(help: "redis-sync: milliseconds between pushes.") var syncMs = 100
    @Option(help: "allot: the coordinators' YAML.") var config: String?
    @Option(help: "allot: the budget in it.") var budgetID = "fleet"
    @Option(help: "allot: coordinators, HOST:PORT[,…].") var coordinator: String?
    @Option(help: "allot: directory with ca.pem and node-<name>.pem.") var tlsDir: String?
    @Option(help: "allot: this node's certificate name.") var name: String?
    @Option(help: "Start at this Unix time in milliseconds (all nodes together).") var startAtMs: Int64?

    func validate() throws {
        guard fleet >= 1, (0..<fleet).contains(index) else { throw ValidationError("--index must be in 0..<--fleet") }
        guard rate > 0, seconds > 0, limit > 0, burst > 0 else { throw ValidationError("--rate, --seconds, --limit and --burst must be positive") }
        if strategy == .allot && (config == nil || coordinator == nil || tlsDir == nil || name == nil) {
            throw ValidationError("--strategy allot needs --config, --coordinator, --tls-dir and --name")
        }
    }

    /// One request of the trace: when it arrives (ns from the start), what it finally costs,
    /// what is known of its cost at admission (`bound` ≥ `cost`), and how long it runs.
    struct Arrival: Equatable {
        var at: Int64
        var cost: Int64
        var bound: Int64
        var duration: Int64
    }

    /// This node's arrivals, Poisson with a rate that follows the pattern.
    static func arrivals(pattern: Pattern, index: Int, fleet: Int, rate: Double, seconds: Double, seed: UInt64) -> [Arrival] {
        var rng = SimRandom(seed: seed &* 1_000_003 &+ UInt64(index))
        var weight = 1.0
        if pattern == .skewed {
            let sum = (0..<fleet).reduce(0.0) { $0 + 1 / Double($1 + 1) }
            weight = (1 / Double(index + 1)) * Double(fleet) / sum
        }
        func rateAt(_ t: Double) -> Double {
            switch pattern {
            case .steady, .tokens: return rate
            case .skewed: return rate * weight
            case .shift:
                let hot = Int(t / 3) % fleet
                let total = rate * Double(fleet)
                return index == hot ? total * 0.5 : total * 0.5 / Double(max(1, fleet - 1))
            case .burst: return t.truncatingRemainder(dividingBy: 5) >= 4.5 ? rate * 4 : rate * 0.5
            }
        }
        let peak = pattern == .shift ? rate * Double(fleet) * 0.5 + rate : pattern == .burst ? rate * 4 : rateAt(0)
        var out: [Arrival] = []
        var t = 0.0
        while true {
            t += rng.exponential(mean: 1 / peak)
            if t >= seconds { break }
            if rng.unit() * peak > rateAt(t) { continue }
            if pattern == .tokens {
                let cost = Int64(rng.logUniform(50, 5_000))
                let bound = Int64((Double(cost) * (1 + rng.unit())).rounded(.up))
                out.append(Arrival(at: Int64(t * 1e9), cost: cost, bound: bound, duration: Int64(rng.logUniform(0.5, 8) * 1e9)))
            } else {
                out.append(Arrival(at: Int64(t * 1e9), cost: 1, bound: 1, duration: 0))
            }
        }
        return out
    }

    func run() async throws {
        let trace = Self.arrivals(pattern: pattern, index: index, fleet: fleet, rate: rate, seconds: seconds, seed: seed)
        var limiter = try await makeLimiter()
        // Requests in flight (tokens): ended by their end time.
        var running = MinHeap<Int64, Admission>()
        var peakInFlight = 0
        // Wait for the common start, then replay in real time.
        if let startAtMs {
            let wait = Double(startAtMs) / 1000 - Date().timeIntervalSince1970
            if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
        }
        let t0 = WallClock.now()
        var lines: [String] = []
        lines.reserveCapacity(trace.count)
        var latencies: [Int64] = []
        latencies.reserveCapacity(trace.count)
        var admitted = 0, admittedUnits: Int64 = 0, offeredUnits: Int64 = 0
        var next = 0
        while next < trace.count {
            let elapsed = (WallClock.now() - t0).nanoseconds
            while let end = running.first, end.key <= elapsed {
                _ = running.pop()
                try limiter.complete(end.value, now: WallClock.now())
            }
            while next < trace.count && trace[next].at <= elapsed {
                let a = trace[next]
                next += 1
                let before = WallClock.now()
                let admission = try limiter.admit(cost: a.cost, bound: a.bound, now: before)
                let after = WallClock.now()
                latencies.append((after - before).nanoseconds)
                offeredUnits += a.cost
                if let admission {
                    admitted += 1
                    admittedUnits += a.cost
                    if a.duration > 0 {
                        running.push(elapsed + a.duration, admission)
                        peakInFlight = max(peakInFlight, running.count)
                    } else {
                        try limiter.complete(admission, now: after)
                    }
                }
                // The real cost, placed at admission (what the overshoot check counts).
                lines.append("\(before.nanoseconds) \(a.cost) \(admission != nil ? 1 : 0) \((after - before).nanoseconds)")
            }
            try limiter.background(now: WallClock.now())
            if next < trace.count {
                let wait = min(trace[next].at, running.first?.key ?? .max) - (WallClock.now() - t0).nanoseconds
                if wait > 200_000 { try await Task.sleep(for: .nanoseconds(min(wait, 2_000_000))) }
            }
        }
        let elapsed = Double((WallClock.now() - t0).nanoseconds) / 1e9
        // Requests still running at the end are settled now (their counts are facts).
        while let end = running.pop() { try limiter.complete(end.value, now: WallClock.now()) }
        let calls = limiter.calls
        await limiter.finish()
        try lines.joined(separator: "\n").write(toFile: out, atomically: true, encoding: .utf8)
        latencies.sort()
        func pct(_ q: Double) -> Double { latencies.isEmpty ? 0 : Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))]) / 1000 }
        let summary: [String: Any] = [
            "node": index, "strategy": strategy.rawValue, "pattern": pattern.rawValue, "attempts": trace.count, "admitted": admitted,
            "admitted_units": admittedUnits, "offered_units": offeredUnits, "calls": calls, "seconds": elapsed,
            "peak_in_flight": peakInFlight, "p50_us": pct(0.5), "p99_us": pct(0.99), "p999_us": pct(0.999), "max_us": Double(latencies.last ?? 0) / 1000,
        ]
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }

    func makeLimiter() async throws -> any BenchLimiter {
        let (host, port) = try ConfigFields.address(redis, field: "--redis")
        let postPaid = pattern == .tokens
        switch strategy {
        case .staticSplit:
            return LocalBucket(rate: Double(limit) / Double(fleet), burst: max(1, Double(burst) / Double(fleet)))
        case .redisWindow:
            return try RedisWindow(client: RedisClient(host: host, port: port), limit: limit, postPaid: postPaid)
        case .redisBucket:
            return try RedisBucket(client: RedisClient(host: host, port: port), limit: limit, burst: burst)
        case .redisSync:
            return RedisSync(client: try RedisClient(host: host, port: port), limit: limit, every: .milliseconds(Int64(syncMs)), postPaid: postPaid)
        case .allot:
            return try await AllotNodeLimiter.start(config: config!, budget: budgetID, coordinator: coordinator!, tlsDir: tlsDir!, name: name!)
        }
    }
}
