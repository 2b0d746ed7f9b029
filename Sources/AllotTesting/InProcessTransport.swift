
import AllotCoordinator
import AllotCore
import AllotTransport
import AllotWire
import Synchronization

/// A transport that calls a `CoordinatorCore` directly, for tests: the same protocol
/// (`Session` rules, frames), no sockets. The identity stands in for the certificate.
public struct InProcessTransport: LeaseTransport {
    public let core: CoordinatorCore
    public let identity: PeerIdentity

    public init(core: CoordinatorCore, identity: PeerIdentity) {
        self.core = core
        self.identity = identity
    }

    public func connect(onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
                        onClose: @escaping @Sendable () -> Void) async throws -> any LeaseConnection {
        InProcessConnection(core: core, identity: identity, onFrame: onFrame, onClose: onClose)
    }
}

final class InProcessConnection: LeaseConnection, FrameSink {
    private let core: CoordinatorCore
    private let onFrame: @Sendable (Allot_V1_Frame) -> Void
    private let onClose: @Sendable () -> Void
    private let session: Mutex<Session>
    private let connectionID = Mutex<UInt64?>(nil)

    init(core: CoordinatorCore, identity: PeerIdentity, onFrame: @escaping @Sendable (Allot_V1_Frame) -> Void,
         onClose: @escaping @Sendable () -> Void) {
        self.core = core
        self.onFrame = onFrame
        self.onClose = onClose
        session = Mutex(Session(identity: identity, limits: core.settings.session, now: WallClock.now()))
    }

    func send(_ frames: [Allot_V1_Frame]) {
        for frame in frames {
            let now = WallClock.now()
            let (action, identity) = session.withLock { ($0.frameReceived(frame, now: now), $0.identity) }
            switch action {
            case .accept(let incarnation):
                guard let (id, ack) = core.connected(identity, incarnation: incarnation, sink: self) else {
                    onFrame(.error(.rateLimited, "too many connections for \(identity.uri)", closing: true))
                    return
                }
                connectionID.withLock { $0 = id }
                onFrame(ack)
            case .acquire(let items): core.acquire(items, from: NodeID(identity.name), now: now).forEach(onFrame)
            case .release(let items): core.release(items, from: NodeID(identity.name), now: now)
            case .heartbeat(let h): onFrame(.heartbeat(h.sequence, reply: true))
            case .status(let after): onFrame(core.status(after: after))
            case .lookup(let budgets, let query): onFrame(core.status(of: budgets, query: query))
            case .directory(let r): core.directory.handle(r, from: identity, reply: self, nodes: { [core] in core.nodeSinks })
            case .gossip(let g):
                if let e = core.gossip(g, from: identity) { onFrame(e) }
            case .auditHead(let h):
                if let e = core.auditHead(h, from: NodeID(identity.name), now: now) { onFrame(e) }
            case .reject(let code, let message, let closing):
                onFrame(.error(code, message, closing: closing))
                if closing { close() }
            case .ignore: break
            }
        }
    }

    // FrameSink: pushes from the coordinator.
    func send(_ frame: Allot_V1_Frame) { onFrame(frame) }

    func close() {
        if let id = connectionID.withLock({ v -> UInt64? in defer { v = nil }; return v }) {
            core.disconnected(id)
            onClose()
        }
    }
}
