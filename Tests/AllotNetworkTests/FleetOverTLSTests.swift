import AllotCoordinator
import AllotCore
import AllotNode
import AllotSimulator
import AllotTransport
import Foundation
import Synchronization
import Testing

/// Must-show 1 of step 2: one coordinator and 8 node clients over real mutual TLS on
/// loopback, several tasks per node hammering one rate and one quota budget.
@Suite("Eight nodes over mTLS share one cap", .serialized)
struct FleetOverTLSTests {
    final class Recorder: Sendable {
        let times = Mutex<[Int64]>([])
        let attempts = Mutex(0)
        let warmupFrames = Mutex(0)
        func record(_ t: Int64) { times.withLock { $0.append(t) } }
        func tried(_ n: Int) { attempts.withLock { $0 += n } }
    }

    struct Outcome {
        var admitted: [Int64]
        var attempts: Int
        var frames: Int
        /// Frames exchanged by the end of the first second (connects, first grants, slack spreading).
        var warmupFrames: Int
        var start: Instant
        var end: Instant
    }

    /// Runs 8 clients with `tasks` hammering tasks each for `seconds`; returns admission times.
    func hammer(pki: TestPKI, port: Int, budgets: [BudgetSpec], seconds: Double, perNodeRate: Int) async throws -> Outcome {
        let recorder = Recorder()
        var clients: [LeaseClient] = []
        var sets: [BudgetSet] = []
        for i in 0..<8 {
            var es = EnforcerSettings(node: NodeID("gw-\(i)"))
            es.prefetchLead = .milliseconds(50)
            let enforcer = try SharedEnforcer(settings: es)
            sets.append(try BudgetSet(budgets.map { enforcer.register($0) }))
            let transport = TLSLeaseTransport(host: "127.0.0.1", port: port, tls: try pki.material(.node, "gw-\(i)"), group: testGroup)
            clients.append(LeaseClient(enforcer: enforcer, transport: transport, logger: quietLogger("node")))
        }
        let start = WallClock.now()
        let deadline = start + .milliseconds(Int64(seconds * 1000))
        try await withThrowingTaskGroup(of: Void.self) { group in
            let runners = clients.map { c in Task { await c.run() } }
            group.addTask { [clients, recorder] in
                try await Task.sleep(for: .seconds(1))
                let f = clients.reduce(0) { $0 + $1.traffic.framesSent + $1.traffic.framesReceived }
                recorder.warmupFrames.withLock { $0 = f }
            }
            for (i, client) in clients.enumerated() {
                for _ in 0..<2 { // two request tasks per node
                    let set = sets[i]
                    let client = client
                    group.addTask { [recorder] in
                        // Offer perNodeRate/2 per second, catching up after slow sleeps.
                        let perTask = Double(perNodeRate / 2)
                        var done = 0
                        while WallClock.now() < deadline {
                            let due = Int(perTask * Double((WallClock.now() - start).nanoseconds) / 1e9) - done
                            for _ in 0..<max(0, due) {
                                let now = WallClock.now()
                                if client.enforcer!.admit(.oneRequest, on: set, now: now).isAdmitted { recorder.record(now.nanoseconds) }
                            }
                            done += max(0, due)
                            recorder.tried(max(0, due))
                            try await Task.sleep(for: .milliseconds(10))
                        }
                    }
                }
            }
            try await group.waitForAll()
            for r in runners { r.cancel() }
            for r in runners { await r.value }
        }
        let frames = clients.reduce(0) { $0 + $1.traffic.framesSent + $1.traffic.framesReceived }
        return Outcome(admitted: recorder.times.withLock { $0.sorted() }, attempts: recorder.attempts.withLock { $0 },
                       frames: frames, warmupFrames: recorder.warmupFrames.withLock { $0 }, start: start, end: WallClock.now())
    }

    @Test("rate budget under contention: exact, utilization ≥ 0.95, ≤ 5 messages per 1,000 requests")
    func rateContention() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let rate = try BudgetSpec(id: "rps", unit: .requests, kind: .rate(limit: 12_000, period: .seconds(1), burst: 12_000))
        let quota = try BudgetSpec(id: "rpm", unit: .requests, kind: .quota(allowance: 10_000_000, window: try CalendarWindow(.minute)))
        let coordinator = try await RunningCoordinator.start(pki: pki, budgets: [rate, quota])
        defer { Task { try? await coordinator.server.shutdown() } }
        // 8 nodes × 2,400 requests/s = 19,200/s offered against 12,000/s (1,500 admitted per node).
        let out = try await hammer(pki: pki, port: coordinator.port, budgets: [rate, quota], seconds: 4, perNodeRate: 2_400)
        var checker = BudgetChecker(spec: rate, epoch: .zero)
        for t in out.admitted { checker.admit(1, at: t, end: t) }
        #expect(checker.conformant, "admissions exceeded burst + rate·T over some interval")
        let first = try #require(out.admitted.first), last = try #require(out.admitted.last)
        let allowed = 12_000 + 12_000 * Double(last - first) / 1e9
        // admitted / min(demand, cap): on a loaded machine the hammering tasks may offer less.
        let utilization = Double(out.admitted.count) / min(allowed, Double(out.attempts))
        #expect(utilization >= 0.95, "utilization \(utilization)")
        // Steady state (after the first second): messages no longer grow with requests.
        let steadyAdmitted = out.admitted.filter { $0 >= out.start.nanoseconds + 1_000_000_000 }.count
        let per1k = Double(out.frames - out.warmupFrames) * 1000 / Double(steadyAdmitted)
        #expect(per1k <= 5, "\(per1k) frames per 1,000 admitted after warm-up (\(out.frames) in all)")
        #expect(out.attempts >= 8 * 1_000 * 3, "offered \(out.attempts)") // ≥ 1,000 requests/s per node
    }

    @Test("quota budget: never more than the allowance, and nearly all of it used")
    func quotaExact() async throws {
        let pki = try TestPKI()
        defer { pki.remove() }
        let quota = try BudgetSpec(id: "day", unit: .requests, kind: .quota(allowance: 20_000, window: try CalendarWindow(.day)))
        let coordinator = try await RunningCoordinator.start(pki: pki, budgets: [quota])
        defer { Task { try? await coordinator.server.shutdown() } }
        let out = try await hammer(pki: pki, port: coordinator.port, budgets: [quota], seconds: 3, perNodeRate: 1_500)
        #expect(out.admitted.count <= 20_000)
        #expect(out.admitted.count >= 19_000, "admitted \(out.admitted.count) of 20,000")
        let st = try #require(coordinator.core.allocatorStatus("day"))
        #expect(st.consumed + st.outstanding + st.pool + st.expiredSpent <= 20_000)
    }
}
