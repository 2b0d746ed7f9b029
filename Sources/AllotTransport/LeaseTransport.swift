import AllotCore
import AllotWire
import Synchronization

/// How a node reaches its coordinator. The lease client is written against this, so tests
/// can run it in-process (`InProcessTransport`) and production over mutual TLS
/// (`TLSLeaseTransport`).
public protocol LeaseTransport: Sendable {
    /// Opens a connection. `onFrame` receives every frame from the coordinator (on any
    /// thread); `onClose` is called once when the connection ends, for whatever reason.
    func connect(onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
                 onClose: @escaping @Sendable () -> Void) async throws -> any LeaseConnection
}

/// An open connection to a coordinator.
public protocol LeaseConnection: Sendable {
    /// Queues frames for sending, in order.
    func send(_ frames: [Allot_V1_Frame])
    func close()
    /// Closes after everything sent so far is on the wire, and waits for it.
    func closeGracefully() async
}

extension LeaseConnection {
    public func closeGracefully() async { close() }
}

/// Makes a transport to a `HOST:PORT` address (nil when the address is not one).
public typealias Dialer = @Sendable (String) -> (any LeaseTransport)?

/// Set by a connection's `onClose`, which can run before `connect` returns (the peer, or a
/// proxy whose upstream is down, closes right after TCP is up): a caller storing the
/// connection checks it first, under the same lock its close handler takes, and does not
/// keep a connection that is already closed (it would hold a dead link forever).
public final class ClosedFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func set() { flag.store(true, ordering: .sequentiallyConsistent) }
    public var isSet: Bool { flag.load(ordering: .sequentiallyConsistent) }
}
