import AllotConfig
import AllotCore
import AllotTransport
import AllotWire

/// One connection's protocol state, independent of the transport: hello first, then frames
/// allowed for the peer's role, within the connection's item budget.
///
/// A state machine: events in (`frameReceived`), actions out; no I/O.
public struct Session: Sendable {
    public enum State: Sendable, Equatable {
        case awaitingHello
        case ready
        case closed
    }

    /// What the shell must do with a frame.
    public enum Action: Sendable {
        /// Answer the hello; `incarnation` is the peer's life (0: not given).
        case accept(incarnation: UInt64)
        /// Serve these acquires / releases / heartbeat / status request.
        case acquire([Allot_V1_Acquire])
        case release([Allot_V1_Release])
        case heartbeat(Allot_V1_Heartbeat)
        case status(after: String)
        /// A node's lookup of named budgets (its gateway's usage endpoint), echoing `query`.
        case lookup([String], query: UInt64)
        /// A membership message from another coordinator.
        case gossip(Allot_V1_Gossip)
        /// A node's audit head, for the ledger.
        case auditHead(Allot_V1_AuditHead)
        /// The consumer directory: a node's wish for a newer one, or an admin's change or read.
        case directory(Allot_V1_DirectoryRequest)
        /// Reply with an error frame; close the connection if `closing`.
        case reject(Allot_V1_Error.Code, String, closing: Bool)
        /// Nothing to do (a heartbeat reply, an error from the peer).
        case ignore
    }

    public let identity: PeerIdentity
    public let limits: Limits
    public private(set) var state: State = .awaitingHello
    /// Item budget of this connection (flood bound): a token bucket in items.
    private var itemTokens: Int64
    private var lastRefill: Instant
    /// Refused frames in the current refusal window (a peer past the limit is disconnected).
    private var refusals = 0
    private var refusalWindowStart: Instant

    public struct Limits: Sendable {
        public var maxItemsPerFrame = WireProtocol.defaultMaxItemsPerFrame
        /// Acquires + releases per second one connection may send; burst as much again.
        public var itemsPerSecond: Int64 = 20_000
        /// Refused frames a connection may send within `refusalWindow`; one more closes it.
        public var maxRefusals = 20
        public var refusalWindow: Duration = .seconds(10)
        public init() {}
    }

    public init(identity: PeerIdentity, limits: Limits = Limits(), now: Instant) {
        self.identity = identity
        self.limits = limits
        self.itemTokens = limits.itemsPerSecond
        self.lastRefill = now
        self.refusalWindowStart = now
    }

    /// What to do with `frame`; a refusal beyond `maxRefusals` in a window closes the connection.
    public mutating func frameReceived(_ frame: Allot_V1_Frame, now: Instant) -> Action {
        let action = decide(frame, now: now)
        guard case .reject(let code, let message, false) = action else { return action }
        if now - refusalWindowStart >= limits.refusalWindow {
            refusalWindowStart = now
            refusals = 0
        }
        refusals += 1
        guard refusals > limits.maxRefusals else { return action }
        state = .closed
        return .reject(code, "\(message); more than \(limits.maxRefusals) refused frames in \(limits.refusalWindow), closing", closing: true)
    }

    private mutating func decide(_ frame: Allot_V1_Frame, now: Instant) -> Action {
        switch state {
        case .closed:
            return .ignore
        case .awaitingHello:
            guard case .hello(let hello) = frame.body else {
                state = .closed
                return .reject(.protocolViolation, "the first frame must be hello, got \(frame.kind)", closing: true)
            }
            guard hello.protocolVersion == WireProtocol.version else {
                state = .closed
                return .reject(.unsupportedVersion, "protocol version \(hello.protocolVersion) is not supported; this coordinator speaks \(WireProtocol.version)", closing: true)
            }
            state = .ready
            return .accept(incarnation: hello.incarnation)
        case .ready:
            break
        }
        switch frame.body {
        case .acquire(let batch):
            guard identity.role == .node else { return deny(frame) }
            return within(batch.items.count, now: now) ?? named(batch.items.map(\.budget))
                ?? counted(batch.items.lazy.compactMap(\.outOfRange).first) ?? .acquire(batch.items)
        case .release(let batch):
            guard identity.role == .node else { return deny(frame) }
            return within(batch.items.count, now: now) ?? named(batch.items.map(\.budget))
                ?? counted(batch.items.lazy.compactMap(\.outOfRange).first) ?? .release(batch.items)
        case .statusRequest(let r) where identity.role == .node:
            // A node may read only the budgets it names (its callers' own, for their usage).
            guard !r.budgets.isEmpty else { return deny(frame) }
            guard r.budgets.count <= limits.maxItemsPerFrame else {
                return .reject(.tooManyItems, "\(r.budgets.count) budgets in one lookup; the maximum is \(limits.maxItemsPerFrame)", closing: false)
            }
            // One item per 32 budgets named: a consumer polling its usage must not use up the
            // item budget its gateway's acquires need, nor read thousands of books per item.
            return within((r.budgets.count + 31) / 32, now: now) ?? named(r.budgets) ?? .lookup(r.budgets, query: r.queryID)
        case .statusRequest(let r):
            guard identity.role == .admin || identity.role == .coordinator else { return deny(frame) }
            return within(1, now: now) ?? named([r.after]) ?? .status(after: r.after)
        case .gossip(let g):
            guard identity.role == .coordinator else {
                // Only coordinators take part in membership: a node cannot spread rumours.
                return deny(frame)
            }
            return within(1 + g.updates.count, now: now) ?? .gossip(g)
        case .heartbeat(let h):
            // Each one costs a reply: a flood is bounded by the same rate as items.
            return within(1, now: now) ?? (h.reply ? .ignore : .heartbeat(h))
        case .auditHead(let h):
            guard identity.role == .node else { return deny(frame) }
            return within(1, now: now) ?? .auditHead(h)
        case .directoryRequest(let r):
            // Nodes may only read them (the directory, the policy); changes and history are for
            // admin certificates.
            guard identity.role == .admin || (identity.role == .node && r.change.isEmpty && r.history == 0 && r.policy.isEmpty && !r.dryRun)
            else { return deny(frame) }
            guard r.change.utf8.count <= 16_384, r.history <= 1_000, r.policy.count <= PolicyDocument.maxBytes * 2 else {
                return .reject(.protocolViolation, "a directory change over 16 KiB, a configuration over 1 MiB or a history of over 1,000 versions; frame dropped", closing: false)
            }
            return within(1, now: now) ?? .directory(r)
        case .error:
            return .ignore
        case .hello:
            return .reject(.protocolViolation, "hello was already received", closing: false)
        case .helloAck, .grants, .push, .statusResponse, .members, .directoryResponse:
            state = .closed
            return .reject(.permissionDenied, "\(identity.uri) may not send \(frame.kind): only a coordinator sends it", closing: true)
        case .none:
            return .reject(.protocolViolation, "unknown message type (a newer peer?); frame ignored", closing: false)
        }
    }

    private func deny(_ frame: Allot_V1_Frame) -> Action {
        .reject(.permissionDenied, "\(identity.uri) (role \(identity.role.rawValue)) may not send \(frame.kind)", closing: false)
    }

    /// Nil when every count is within 0...maxUnits (`bad`: the first that is not).
    private func counted(_ bad: String?) -> Action? {
        bad.map { .reject(.protocolViolation, "\($0) is outside 0...\(WireProtocol.maxUnits); frame dropped", closing: false) }
    }

    /// Nil when every budget id is of a length a budget can have.
    private func named(_ budgets: [String]) -> Action? {
        guard let long = budgets.first(where: { $0.utf8.count > WireProtocol.maxBudgetIDBytes }) else { return nil }
        return .reject(.protocolViolation, "a budget id of \(long.utf8.count) bytes; the longest allowed is \(WireProtocol.maxBudgetIDBytes); frame dropped", closing: false)
    }

    /// Nil when the items fit this frame's and this connection's limits.
    private mutating func within(_ items: Int, now: Instant) -> Action? {
        if items > limits.maxItemsPerFrame {
            return .reject(.tooManyItems, "\(items) items in one frame; the maximum is \(limits.maxItemsPerFrame)", closing: false)
        }
        let dt = max(0, (now - lastRefill).nanoseconds)
        lastRefill = now
        let cap = 2 * limits.itemsPerSecond
        itemTokens = min(cap, Checked.sum(itemTokens, Int64(min(Double(cap), Double(dt) / 1e9 * Double(limits.itemsPerSecond)))))
        guard itemTokens >= Int64(items) else {
            return .reject(.rateLimited, "more than \(limits.itemsPerSecond) items per second on this connection; frame dropped", closing: false)
        }
        itemTokens -= Int64(items)
        return nil
    }

    public mutating func close() { state = .closed }
}
