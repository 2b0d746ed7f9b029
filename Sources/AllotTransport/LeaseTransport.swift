import AllotCore
import AllotWire

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
