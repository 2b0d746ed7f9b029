import AllotConfig
import AllotCoordinator
import AllotCore
import AllotRateLimit
import AllotTesting
import AllotTransport
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Synchronization

/// `allot-bench rls`: Envoy's `ShouldRateLimit` from a local gRPC client, answered two ways in
/// one run: by `allot ratelimit-service`'s core from its leases (a coordinator in process: no
/// request goes to it once the lease is held), and by the same gRPC service backed by a real
/// Redis the way envoyproxy/ratelimit counts (INCRBY of the window's key + expiry, one round
/// trip per descriptor). Sequential calls on one connection; prints one JSON line per mode
/// with p50, p99, p99.9 in microseconds.
struct BenchRLS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rls", abstract: "ShouldRateLimit latency: Allot's leases vs a Redis counter per call (bench/rls.sh).")

    @Option(help: "Calls to time per mode (after 2,000 warm-up calls).") var calls = 20_000
    @Option(help: "Redis to count in (HOST:PORT); without it only Allot is measured.") var redis: String?

    static let rules = "domain: bench\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 1000000000}\n"

    func run() async throws {
        let (domain, list) = try RateLimitRulesFile.parse(Self.rules, file: "bench")
        var rules = DescriptorRules()
        try rules.add(domain: domain, rules: list)
        var logger = Logger(label: "bench-rls")
        logger.logLevel = .critical
        // Allot: a sidecar fed by a coordinator in process.
        var settings = CoordinatorCore.Settings()
        settings.descriptors = rules
        let core = try CoordinatorCore(settings: settings, budgets: [], now: WallClock.now())
        let transport = InProcessTransport(core: core, identity: try PeerIdentity(trustDomain: "t", role: .node, name: "bench"))
        let sidecar = try RateLimitSidecar(name: "bench", rules: rules, seeds: [""], dial: { _ in transport }, logger: logger)
        let (serving, port) = try await Self.serve { port in try await sidecar.run(host: "127.0.0.1", port: 0, onListening: port) }
        try await measure("allot", port: port)
        // The decision alone, without gRPC (the lease is held by now).
        let descriptor = [RateLimitCore.Descriptor(entries: [("tenant", "acme")])]
        try await time("allot-decision-only") {
            guard await !sidecar.core.decide(domain: "bench", descriptors: descriptor, hits: 1).overLimit else { throw ValidationError("over the limit") }
        }
        serving.cancel()
        _ = await serving.result
        guard let redis else { return }
        let (host, p) = try ConfigFields.address(redis, field: "--redis")
        let counter = try RedisCounter(host: host, port: p)
        try await time("redis-incrby-call-only") {
            let key = "bench_tenant_acme_\(Int64(Date().timeIntervalSince1970))"
            _ = try counter.client.withLock { try $0.command(["EVALSHA", counter.sha, "1", key, "1"]) }
        }
        let (redisServing, redisPort) = try await Self.serve { port in
            try await RateLimitServer.serve(counter, host: "127.0.0.1", port: 0, onListening: port)
        }
        try await measure("redis-incrby", port: redisPort)
        redisServing.cancel()
        _ = await redisServing.result
    }

    /// Times `calls` runs of `body` (after 2,000 warm-up runs).
    func time(_ name: String, _ body: () async throws -> Void) async throws {
        var out: [Double] = []
        out.reserveCapacity(calls)
        for i in 0..<(2_000 + calls) {
            let t0 = ContinuousClock.now
            try await body()
            let dt = ContinuousClock.now - t0
            if i >= 2_000 { out.append(Double(dt.components.attoseconds) / 1e12 + Double(dt.components.seconds) * 1e6) }
        }
        report(name, out)
    }

    func report(_ name: String, _ samples: [Double]) {
        let sorted = samples.sorted()
        func q(_ f: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * f))] }
        print(String(format: "{\"mode\":\"%@\",\"calls\":%d,\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f}", name, sorted.count, q(0.5), q(0.99), q(0.999)))
    }

    /// Starts `serve` (which reports its port) in a task.
    static func serve(_ serve: @escaping @Sendable (@escaping @Sendable (Int) -> Void) async throws -> Void) async throws -> (Task<Void, any Error>, Int) {
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let server = Task { try await serve { cont.yield($0); cont.finish() } }
        var port = 0
        for await p in stream { port = p }
        return (server, port)
    }

    /// Times `calls` sequential ShouldRateLimit calls to `port`.
    func measure(_ name: String, port: Int) async throws {
        let client = GRPCClient(transport: try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext))
        let samples = try await withThrowingTaskGroup(of: [Double].self) { group in
            group.addTask { try await client.runConnections(); return [] }
            let rls = Envoy_Service_Ratelimit_V3_RateLimitService.Client(wrapping: client)
            var req = Envoy_Service_Ratelimit_V3_RateLimitRequest()
            req.domain = "bench"
            var d = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor()
            var e = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor.Entry()
            (e.key, e.value) = ("tenant", "acme")
            d.entries = [e]
            req.descriptors = [d]
            var out: [Double] = []
            out.reserveCapacity(calls)
            for i in 0..<(2_000 + calls) {
                let t0 = ContinuousClock.now
                let r = try await rls.shouldRateLimit(req)
                let dt = ContinuousClock.now - t0
                guard r.overallCode == .ok else { throw ValidationError("\(name): over the limit at call \(i)") }
                if i >= 2_000 { out.append(Double(dt.components.attoseconds) / 1e12 + Double(dt.components.seconds) * 1e6) }
            }
            client.beginGracefulShutdown()
            return out
        }
        report(name, samples)
    }
}

/// The same RPC counted as envoyproxy/ratelimit counts: per descriptor, INCRBY of the key of
/// the current window and its expiry (one atomic script, one round trip), over the limit when
/// the count passes it.
final class RedisCounter: Envoy_Service_Ratelimit_V3_RateLimitService.SimpleServiceProtocol, Sendable {
    let client: Mutex<RedisClient>
    let sha: String

    init(host: String, port: Int) throws {
        let c = try RedisClient(host: host, port: port)
        let script = "local c = redis.call('INCRBY', KEYS[1], ARGV[1])\nif c == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], 2) end\nreturn c"
        guard case .string(let s) = try c.command(["SCRIPT", "LOAD", script]) else { throw RedisClient.Failure(description: "SCRIPT LOAD failed") }
        sha = s
        client = Mutex(c)
    }

    func shouldRateLimit(request: Envoy_Service_Ratelimit_V3_RateLimitRequest, context: ServerContext) async throws -> Envoy_Service_Ratelimit_V3_RateLimitResponse {
        var r = Envoy_Service_Ratelimit_V3_RateLimitResponse()
        r.overallCode = .ok
        let window = Int64(Date().timeIntervalSince1970)
        for d in request.descriptors {
            let key = request.domain + "_" + d.entries.map { $0.key + "_" + $0.value }.joined(separator: "_") + "_\(window)"
            let reply = try client.withLock { try $0.command(["EVALSHA", sha, "1", key, "\(max(1, request.hitsAddend))"]) }
            var s = Envoy_Service_Ratelimit_V3_RateLimitResponse.DescriptorStatus()
            if case .integer(let c) = reply, c > 1_000_000_000 { s.code = .overLimit; r.overallCode = .overLimit } else { s.code = .ok }
            r.statuses.append(s)
        }
        return r
    }
}
