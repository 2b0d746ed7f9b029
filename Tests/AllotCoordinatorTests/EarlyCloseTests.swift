import AllotCoordinator
import AllotCore
import AllotNode
import AllotTesting
import AllotTransport
import AllotWire
import Foundation
import Logging
import Synchronization
import Testing

/// A transport whose first `closeFirst` connections are closed by the far side before
/// `connect` returns, as a proxy does when the coordinator behind it is not listening yet.
final class EarlyCloseTransport: LeaseTransport {
    let inner: any LeaseTransport
    let closeFirst: Int
    let attempts = Mutex(0)

    init(inner: any LeaseTransport, closeFirst: Int) {
        self.inner = inner
        self.closeFirst = closeFirst
    }

    struct Dead: LeaseConnection {
        func send(_ frames: [Allot_V1_Frame]) {}
        func close() {}
    }

    func connect(onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
                 onClose: @escaping @Sendable () -> Void) async throws -> any LeaseConnection {
        let n = attempts.withLock { $0 += 1; return $0 }
        guard n > closeFirst else {
            onClose()
            return Dead()
        }
        return try await inner.connect(onFrame: onFrame, onClose: onClose)
    }
}

@Suite("A connection closed before connect returns")
struct EarlyCloseTests {
    @Test("the lease client does not keep it: it dials again and is served (real time, ~0.1 s)")
    func leaseClientRedials() async throws {
        let core = try CoordinatorCore(settings: CoordinatorCore.Settings(), budgets: [
            try BudgetSpec(id: "rps", unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100)),
        ], now: WallClock.now())
        let transport = EarlyCloseTransport(
            inner: InProcessTransport(core: core, identity: try PeerIdentity(trustDomain: "t", role: .node, name: "gw-1")),
            closeFirst: 1)
        var settings = EnforcerSettings(node: "gw-1")
        settings.refreshInterval = .milliseconds(200)
        let enforcer = try SharedEnforcer(settings: settings)
        let handle = enforcer.register(try BudgetSpec(id: "rps", unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100)))
        var logger = Logger(label: "early-close")
        logger.logLevel = .critical
        let client = LeaseClient(enforcer: enforcer, seeds: ["c:1"], logger: logger, dial: { _ in transport })
        let task = Task { await client.run() }
        defer { task.cancel() }
        var admitted = false
        for _ in 0..<150 where !admitted {
            try await Task.sleep(for: .milliseconds(20))
            admitted = enforcer.admit(.oneRequest, on: BudgetSet(handle), now: WallClock.now()).isAdmitted
        }
        #expect(admitted, "the client kept the dead first connection")
        #expect(transport.attempts.withLock { $0 } >= 2)
        #expect(core.connectedNodes == 1)
    }
}
