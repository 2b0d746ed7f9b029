import AllotCore
import Synchronization

/// The proxy and admin ports a gateway reports once it listens.
final class PortsBox: Sendable {
    private let ports = Mutex<(Int, Int)?>(nil)
    func set(_ p: Int, _ a: Int) { ports.withLock { $0 = (p, a) } }
    func wait() async throws -> (Int, Int) {
        for _ in 0..<500 {
            if let p = ports.withLock({ $0 }) { return p }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw AllotError(.invalidSettings, "the gateway did not start")
    }
}
