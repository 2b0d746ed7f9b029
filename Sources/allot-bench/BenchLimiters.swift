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

/// An admitted request until it ends: what it finally costs, what was known at admission,
/// and Allot's reservation.
struct Admission {
    var cost: Int64
    var bound: Int64
    var reservation: Reservation?
}

/// One strategy's decision, as a node makes it.
protocol BenchLimiter {
    /// Decides a request whose cost is at most `bound` (its final `cost` is known only when
    /// it ends: strategies must not look at it here). Nil: denied.
    mutating func admit(cost: Int64, bound: Int64, now: Instant) throws -> Admission?
    /// The request ended and cost `a.cost`.
    mutating func complete(_ a: Admission, now: Instant) throws
    /// Work off the request path (redis-sync's pushes).
    mutating func background(now: Instant) throws
    /// Messages sent to a coordinator or Redis, and received from it.
    var calls: Int { get }
    func finish() async
}

extension BenchLimiter {
    mutating func complete(_ a: Admission, now: Instant) throws {}
    mutating func background(now: Instant) throws {}
    func finish() async {}
}

/// static-split: an exact local token bucket with 1/N of the rate and burst.
struct LocalBucket: BenchLimiter {
    let rate: Double
    let burst: Double
    var tokens: Double
    var last: Instant?
    var calls: Int { 0 }

    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        tokens = burst
    }

    /// Reserves the bound; the unused part comes back at the end.
    mutating func admit(cost: Int64, bound: Int64, now: Instant) -> Admission? {
        if let last { tokens = min(burst, tokens + Double((now - last).nanoseconds) / 1e9 * rate) }
        last = now
        guard tokens >= Double(bound) else { return nil }
        tokens -= Double(bound)
        return Admission(cost: cost, bound: bound)
    }

    mutating func complete(_ a: Admission, now: Instant) {
        tokens = min(burst, tokens + Double(a.bound - a.cost))
    }
}

/// envoyproxy/ratelimit's shape: a counter per fixed one-second window, incremented by every
/// request (admitted or not) with an expiry, in one atomic script.
///
/// Tokens (post-paid, Envoy AI Gateway's shape): admitted while the window's count is under
/// the limit (an increment of 0), the real count added when the request ends.
struct RedisWindow: BenchLimiter {
    let client: RedisClient
    let limit: Int64
    let postPaid: Bool
    let sha: String
    var calls: Int { client.calls * 2 }

    init(client: RedisClient, limit: Int64, postPaid: Bool) throws {
        self.client = client
        self.limit = limit
        self.postPaid = postPaid
        let script = """
        local c = redis.call('INCRBY', KEYS[1], ARGV[1])
        if c == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], 2000) end
        return c
        """
        guard case .string(let s) = try client.command(["SCRIPT", "LOAD", script]) else { throw RedisClient.Failure(description: "SCRIPT LOAD failed") }
        sha = s
    }

    mutating func admit(cost: Int64, bound: Int64, now: Instant) throws -> Admission? {
        let add = postPaid ? 0 : bound
        let c = try count(add, now: now)
        return (postPaid ? c < limit : c <= limit) ? Admission(cost: cost, bound: bound) : nil
    }

    mutating func complete(_ a: Admission, now: Instant) throws {
        if postPaid { _ = try count(a.cost, now: now) }
    }

    private func count(_ add: Int64, now: Instant) throws -> Int64 {
        let window = now.nanoseconds / 1_000_000_000
        guard case .integer(let c) = try client.command(["EVALSHA", sha, "1", "bench:window:\(window)", "\(add)"]) else { return .max }
        return c
    }
}

/// An exact token bucket in Redis (tokens and timestamp in a hash, Redis's own clock), one
/// atomic script per request: the accurate central counter. Tokens: it reserves the bound and
/// gives the unused part back at the end, a second call (LiteLLM's central reservation).
struct RedisBucket: BenchLimiter {
    let client: RedisClient
    let sha: String
    let limit: Int64
    let burst: Int64
    var calls: Int { client.calls * 2 }

    init(client: RedisClient, limit: Int64, burst: Int64) throws {
        self.client = client
        self.limit = limit
        self.burst = burst
        let script = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
        local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        local tokens = tonumber(b[1]) or burst
        local ts = tonumber(b[2]) or now
        tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)
        local ok = 0
        if cost < 0 or tokens >= cost then tokens = math.min(burst, tokens - cost); ok = 1 end
        redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
        redis.call('PEXPIRE', KEYS[1], 60000)
        return ok
        """
        guard case .string(let s) = try client.command(["SCRIPT", "LOAD", script]) else { throw RedisClient.Failure(description: "SCRIPT LOAD failed") }
        sha = s
    }

    mutating func admit(cost: Int64, bound: Int64, now: Instant) throws -> Admission? {
        try take(bound) ? Admission(cost: cost, bound: bound) : nil
    }

    mutating func complete(_ a: Admission, now: Instant) throws {
        if a.bound > a.cost { _ = try take(a.cost - a.bound) } // a negative take gives back
    }

    private func take(_ n: Int64) throws -> Bool {
        try client.command(["EVALSHA", sha, "1", "bench:bucket", "\(limit)", "\(burst)", "\(n)"]) == .integer(1)
    }
}

/// Kong's redis policy with sync_rate: each node counts locally in one-second windows and
/// pushes its count to Redis every `every`, learning the fleet's total from the answer;
/// between pushes it admits against that total plus its own unpushed count. Tokens
/// (post-paid, Kong's AI rate limiting): admitted while under the limit, the real count added
/// when the request ends.
struct RedisSync: BenchLimiter {
    let client: RedisClient
    let limit: Int64
    let every: Duration
    let postPaid: Bool
    var window: Int64 = -1
    var known: Int64 = 0
    var unpushed: Int64 = 0
    var lastPush: Instant = .zero
    var calls: Int { client.calls * 2 }

    mutating func admit(cost: Int64, bound: Int64, now: Instant) -> Admission? {
        roll(now)
        if postPaid { return known + unpushed < limit ? Admission(cost: cost, bound: bound) : nil }
        guard known + unpushed + bound <= limit else { return nil }
        unpushed += bound
        return Admission(cost: cost, bound: bound)
    }

    mutating func complete(_ a: Admission, now: Instant) {
        guard postPaid else { return }
        roll(now)
        unpushed += a.cost
    }

    mutating func roll(_ now: Instant) {
        let w = now.nanoseconds / 1_000_000_000
        if w != window {
            window = w
            known = 0
            unpushed = 0
        }
    }

    mutating func background(now: Instant) throws {
        roll(now)
        guard now - lastPush >= every else { return }
        lastPush = now
        let key = "bench:sync:\(window)"
        if case .integer(let total) = try client.command(["INCRBY", key, "\(unpushed)"]) {
            known = total
            unpushed = 0
        }
        if known == 0 { _ = try client.command(["PEXPIRE", key, "3000"]) }
    }
}

/// Allot: the node library, leases from the coordinators, every decision local.
struct AllotNodeLimiter: BenchLimiter {
    let enforcer: SharedEnforcer
    let client: LeaseClient
    let set: BudgetSet
    let task: Task<Void, Never>
    let tokens: Bool
    var calls: Int { client.traffic.framesSent + client.traffic.framesReceived }

    static func start(config: String, budget: String, coordinator: String, tlsDir: String, name: String) async throws -> AllotNodeLimiter {
        let cfg = try CoordinatorConfig.load(path: config)
        guard let spec = cfg.budgets.first(where: { $0.id.rawValue == budget }) else { throw ValidationError("\(config) has no budget `\(budget)`") }
        var settings = EnforcerSettings(node: NodeID(name))
        settings.leaseTTL = cfg.core.allocator.leaseTTL
        settings.refreshInterval = cfg.core.allocator.refreshInterval
        settings.renewMargin = min(settings.renewMargin, cfg.core.allocator.leaseTTL / 3)
        let enforcer = try SharedEnforcer(settings: settings)
        let set = BudgetSet(enforcer.register(spec))
        let dir = URL(fileURLWithPath: tlsDir)
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: name) }
        var logger = Logger(label: "allot.bench")
        logger.logLevel = .warning
        let client = LeaseClient(enforcer: enforcer, seeds: coordinator.split(separator: ",").map(String.init), logger: logger,
                                 dial: TLSLeaseTransport.dialer(tls: tls, group: MultiThreadedEventLoopGroup.singleton))
        let task = Task { await client.run() }
        // Connected before the clock starts, as a running gateway would be.
        for _ in 0..<200 where !client.isConnected { try await Task.sleep(for: .milliseconds(10)) }
        return AllotNodeLimiter(enforcer: enforcer, client: client, set: set, task: task, tokens: spec.unit == .tokens)
    }

    /// Reserves the bound on the node's local lease; the unused part goes back at the end.
    mutating func admit(cost: Int64, bound: Int64, now: Instant) -> Admission? {
        if !tokens { return enforcer.admit(.oneRequest, on: set, now: now).isAdmitted ? Admission(cost: 1, bound: 1) : nil }
        guard case .admitted(let r) = enforcer.reserve(tokens ? Cost(requests: 1, tokens: bound) : .oneRequest, on: set, now: now) else {
            return nil
        }
        return Admission(cost: cost, bound: bound, reservation: r)
    }

    mutating func complete(_ a: Admission, now: Instant) {
        if let r = a.reservation { enforcer.settle(r, actual: Cost(requests: 1, tokens: a.cost), now: now) }
    }

    func finish() async {
        task.cancel()
        await task.value
    }
}
