import AllotCluster
import AllotCoordination
import AllotCore
import AllotTransport
import AllotWire

/// Read-only views of the coordinator (status pages, `/metrics`, `/readyz`), its counters,
/// and closing connections (deny list, drain, crash in tests).
extension CoordinatorCore {
    /// Cluster mode: the view as nodes see it.
    public var members: (list: [MemberID], version: UInt64) { machine { $0.view.map { ($0.members, $0.version) } ?? ([], 0) } }
    public var isFormed: Bool { machine { $0.view?.formed ?? true } }
    /// Standalone, or formed with a quorum: grants are being served (`/readyz`).
    public var isServing: Bool { machine { $0.view?.serving ?? true } }
    /// The audit heads reported to this coordinator since it started, by node.
    public var auditHeads: [String: AuditHead] { machine { $0.auditHeads } }
    public func allocatorStatus(_ budget: BudgetID) -> Allocator.Status? { machine { $0.allocator.status(budget) } }

    /// One page of the status: the budgets whose id sorts after `after`, as many as one frame
    /// holds; `next` names the last one when more follow.
    public func status(after: String = "") -> Allot_V1_Frame {
        state.withLock { s in
            var r = Allot_V1_StatusResponse()
            r.coordinatorName = settings.name
            r.connectedNodes = UInt32(clamping: s.peers.nodeCount)
            let ids = s.machine.allocator.budgetIDs(after: after)
            let page = WireProtocol.pages(Array(ids.prefix(settings.session.maxItemsPerFrame)), maxItems: settings.session.maxItemsPerFrame, maxBytes: settings.maxFrameBytes) {
                $0.rawValue.utf8.count + 16
            }.first ?? []
            if page.count < ids.count, let last = page.last { r.next = last.rawValue }
            r.budgets = page.compactMap { id in s.machine.allocator.status(id).map { Allot_V1_BudgetStatus(id, $0) } }
            var f = Allot_V1_Frame()
            f.statusResponse = r
            return f
        }
    }

    /// The named budgets' status, those this coordinator holds (a node's lookup; the session
    /// has bounded their number to one frame's items).
    public func status(of budgets: [String], query: UInt64) -> Allot_V1_Frame {
        machine { m in
            var r = Allot_V1_StatusResponse()
            r.coordinatorName = settings.name
            r.queryID = query
            // A budget whose ledger row is still loading has no books to show yet.
            r.budgets = budgets.compactMap { id in
                m.loading.contains(BudgetID(id)) ? nil : m.allocator.status(BudgetID(id)).map { Allot_V1_BudgetStatus(BudgetID(id), $0) }
            }
            var f = Allot_V1_Frame()
            f.statusResponse = r
            return f
        }
    }

    /// Every budget's status at once (for `/metrics`, which is not bound by a frame's size).
    public func budgetStatuses() -> [Allot_V1_BudgetStatus] {
        machine { m in m.allocator.budgetIDs.compactMap { id in m.allocator.status(id).map { Allot_V1_BudgetStatus(id, $0) } } }
    }

    /// Every connected node's connection (to send the consumer directory).
    public var nodeSinks: [any FrameSink] { state.withLock { $0.peers.nodeSinks } }

    public var counters: Counters { machine { $0.counters } }
    public func count(frame kind: String) { machine { $0.counters.framesIn[kind, default: 0] += 1 } }
    public func count(rejected reason: String) { machine { $0.counters.rejected[reason, default: 0] += 1 } }
    public func count(handshakeFailure reason: String) { machine { $0.counters.handshakeFailures[reason, default: 0] += 1 } }
    public func count(closedBy reason: String) { machine { $0.counters.closedByLimit[reason, default: 0] += 1 } }
    public func count(backpressure: Void) { machine { $0.counters.backpressurePauses += 1 } }
    public func count(frameError reason: String) { machine { $0.counters.frameErrors[reason, default: 0] += 1 } }

    /// Closes the open connections whose identity or certificate serial `denyList` now names
    /// (after a reload); returns how many.
    @discardableResult
    public func disconnect(denied denyList: DenyList) -> Int {
        let sinks = state.withLock { s in s.peers.all.values.filter { denyList.denies($0.identity, serial: $0.serial) }.map(\.sink) }
        for sink in sinks {
            sink.send(.error(.permissionDenied, "this identity is on the coordinator's deny list", closing: true))
            sink.close()
        }
        machine { $0.counters.closedByLimit["denied", default: 0] += Int64(sinks.count) }
        return sinks.count
    }

    /// Drops every connection without a word (a crash, in tests).
    public func abort() {
        for sink in state.withLock({ $0.peers.all.values.map(\.sink) }) { sink.close() }
    }

    /// Asks every connected peer to go away (graceful shutdown).
    public func drain() {
        for sink in state.withLock({ $0.peers.all.values.map(\.sink) }) {
            sink.send(.error(.shuttingDown, "coordinator shutting down", closing: true))
            sink.close()
        }
    }

    /// Grants in frames within this coordinator's limits (none when there are none).
    func frames(_ grants: [Allot_V1_Grant], push: Bool = false) -> [Allot_V1_Frame] {
        Allot_V1_Frame.grants(grants, push: push, maxItems: settings.session.maxItemsPerFrame, maxBytes: settings.maxFrameBytes)
    }
}
