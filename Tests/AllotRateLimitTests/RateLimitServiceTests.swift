import AllotConfig
import AllotCoordinator
import AllotCore
import AllotNode
@testable import AllotRateLimit
import AllotTesting
import AllotTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Synchronization
import Testing

typealias RLSRequest = Envoy_Service_Ratelimit_V3_RateLimitRequest
typealias RLSResponse = Envoy_Service_Ratelimit_V3_RateLimitResponse

/// Sidecars in process beside one coordinator (in-process transport), each serving gRPC on
/// loopback; clients generated from the same protos call them.
final class SidecarFleet: Sendable {
    let core: CoordinatorCore
    let sidecars: [RateLimitSidecar]
    let ports: [Int]
    private let tasks: Mutex<[Task<Void, any Error>]>

    private init(core: CoordinatorCore, sidecars: [RateLimitSidecar], ports: [Int], tasks: [Task<Void, any Error>]) {
        (self.core, self.sidecars, self.ports) = (core, sidecars, ports)
        self.tasks = Mutex(tasks)
    }

    static func start(nodes: Int, rules paths: [String]) async throws -> SidecarFleet {
        let rules = try RateLimitRulesFile.load(paths)
        var settings = CoordinatorCore.Settings()
        settings.descriptors = rules
        settings.allocator.leaseTTL = .seconds(10)
        let core = try CoordinatorCore(settings: settings, budgets: [], now: WallClock.now())
        var logger = Logger(label: "rls-test")
        logger.logLevel = .critical
        var sidecars: [RateLimitSidecar] = [], ports: [Int] = [], tasks: [Task<Void, any Error>] = []
        for i in 0..<nodes {
            let identity = try PeerIdentity(trustDomain: "t", role: .node, name: "rls-\(i)")
            let transport = InProcessTransport(core: core, identity: identity)
            let s = try RateLimitSidecar(name: "rls-\(i)", rules: rules, seeds: [""], dial: { _ in transport }, lease: settings.allocator,
                                         logger: logger)
            let (stream, cont) = AsyncStream<Int>.makeStream()
            tasks.append(Task { try await s.run(host: "127.0.0.1", port: 0) { cont.yield($0); cont.finish() } })
            var port = 0
            for await p in stream { port = p }
            sidecars.append(s)
            ports.append(port)
        }
        return SidecarFleet(core: core, sidecars: sidecars, ports: ports, tasks: tasks)
    }

    func stop() async {
        let ts = tasks.withLock { $0 }
        for t in ts { t.cancel() }
        for t in ts { _ = await t.result }
    }
}

/// A gRPC client of the generated stub, on one connection to `port`.
func withRLSClient<T: Sendable>(port: Int, _ body: (Envoy_Service_Ratelimit_V3_RateLimitService.Client<HTTP2ClientTransport.Posix>) async throws -> T) async throws -> T {
    let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
    let client = GRPCClient(transport: transport)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await client.runConnections() }
        defer { client.beginGracefulShutdown() }
        return try await body(Envoy_Service_Ratelimit_V3_RateLimitService.Client(wrapping: client))
    }
}

func request(_ domain: String, _ descriptors: [[(String, String)]], hits: UInt32 = 0) -> RLSRequest {
    var r = RLSRequest()
    r.domain = domain
    r.hitsAddend = hits
    r.descriptors = descriptors.map { entries in
        var d = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor()
        d.entries = entries.map { k, v in
            var e = Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor.Entry()
            (e.key, e.value) = (k, v)
            return e
        }
        return d
    }
    return r
}

@Suite("Envoy's rate-limit service", .serialized)
struct RateLimitServiceTests {
    @Test("real time, gRPC: envoyproxy/ratelimit's example config unchanged and its example descriptors, from a client generated from the same protos: codes, limits, hits_addend, headers, no rule answers OK, bad requests refused")
    func exampleDescriptors() async throws {
        let fleet = try await SidecarFleet.start(nodes: 1, rules: [Fixtures.example])
        defer { Task { await fleet.stop() } }
        try await withRLSClient(port: fleet.ports[0]) { rls in
            // source_cluster=proxy → destination_cluster=mock: 1 per minute.
            let mock = request("rl", [[("source_cluster", "proxy"), ("destination_cluster", "mock")]])
            let first = try await rls.shouldRateLimit(mock)
            #expect(first.overallCode == .ok && first.statuses.count == 1)
            #expect(first.statuses[0].currentLimit.requestsPerUnit == 1 && first.statuses[0].currentLimit.unit == .minute)
            #expect(first.statuses[0].durationUntilReset.seconds > 0)
            #expect(first.responseHeadersToAdd.map(\.key) == ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"])
            #expect(first.responseHeadersToAdd.first?.value == "1, 1;w=60")
            let second = try await rls.shouldRateLimit(mock)
            #expect(second.overallCode == .overLimit && second.statuses[0].code == .overLimit && second.statuses[0].limitRemaining == 0)
            // foo=… → bar=banned: 0 per minute, always over the limit.
            #expect(try await rls.shouldRateLimit(request("rl", [[("foo", "x"), ("bar", "banned")]])).overallCode == .overLimit)
            // Unlimited and unmatched descriptors: OK, no limit reported.
            for d in [[("qux", "q")], [("foo", "x"), ("bay", "q")], [("nothing", "here")]] {
                let r = try await rls.shouldRateLimit(request("rl", [d]))
                #expect(r.overallCode == .ok && r.statuses.count == 1 && !r.statuses[0].hasCurrentLimit, "\(d)")
            }
            #expect(try await rls.shouldRateLimit(request("no-such-domain", [[("foo", "x")]])).overallCode == .ok)
            // hits_addend 2 on bar (3 per minute): 2 fit, the next 2 do not; none charged for a refusal.
            let bar = request("rl", [[("foo", "h"), ("bar", "y")]], hits: 2)
            #expect(try await rls.shouldRateLimit(bar).overallCode == .ok)
            #expect(try await rls.shouldRateLimit(bar).overallCode == .overLimit)
            #expect(try await rls.shouldRateLimit(request("rl", [[("foo", "h"), ("bar", "y")]], hits: 1)).overallCode == .ok)
            // Shadow mode (baz=shady, 1 per minute): counted, never refused.
            for _ in 0..<3 { #expect(try await rls.shouldRateLimit(request("rl", [[("foo", "s"), ("baz", "shady")]])).overallCode == .ok) }
            #expect(fleet.sidecars[0].core.counts.withLock { $0.shadowDenied } == 2)
            // Several descriptors: over the limit when any is; a refused request charges none.
            let both = try await rls.shouldRateLimit(request("rl", [[("foo", "m")], [("source_cluster", "proxy"), ("destination_cluster", "mock")]]))
            #expect(both.overallCode == .overLimit && both.statuses.map(\.code) == [.ok, .overLimit])
            #expect(try await rls.shouldRateLimit(request("rl", [[("foo", "m")]])).overallCode == .ok)
            #expect(try await rls.shouldRateLimit(request("rl", [[("foo", "m")]])).overallCode == .ok, "foo=m: 2 per minute, the refused request took none")
            #expect(try await rls.shouldRateLimit(request("rl", [[("foo", "m")]])).overallCode == .overLimit)
            // Bad requests: INVALID_ARGUMENT, as envoyproxy/ratelimit answers them.
            for bad in [request("", [[("foo", "x")]]), request("rl", [])] {
                await #expect { _ = try await rls.shouldRateLimit(bad) } throws: { ($0 as? RPCError)?.code == .invalidArgument }
            }
        }
    }

    @Test("real time: three sidecars sharing one 50/s budget under load from three clients never admit more than burst + rate·T between them")
    func threeSidecarsShareOneBudget() async throws {
        let fleet = try await SidecarFleet.start(nodes: 3, rules: [Fixtures.load])
        defer { Task { await fleet.stop() } }
        let start = ContinuousClock.now
        let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
            for port in fleet.ports {
                group.addTask {
                    try await withRLSClient(port: port) { rls in
                        var ok = 0
                        let req = request("load", [[("tenant", "acme")]])
                        while ContinuousClock.now - start < .seconds(2) {
                            if try await rls.shouldRateLimit(req).overallCode == .ok { ok += 1 }
                        }
                        return ok
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let bound = 50 + Int(50 * seconds)
        print("RateLimitServiceTests: three sidecars admitted \(admitted) in \(seconds) s; bound \(bound)")
        #expect(admitted <= bound, "\(admitted) admitted in \(seconds) s over 3 sidecars; burst + rate·T = \(bound)")
        #expect(admitted >= 50, "the budget was used: \(admitted)")
    }
}
