import AllotCore
import AllotNode
import AllotWire
import ServiceLifecycle

/// Sends the audit trail's head to a coordinator every `interval` when it moved, and once more
/// on shutdown; the coordinators keep the highest per node in the ledger, where
/// `allot audit verify --ledger` compares it with the trail.
final class AuditHeadReporter: Service, Sendable {
    let audit: AuditLog
    let client: LeaseClient
    let interval: Duration

    init(audit: AuditLog, client: LeaseClient, interval: Duration) {
        self.audit = audit
        self.client = client
        self.interval = interval
    }

    func run() async throws {
        var sent: AuditHead?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            sent = report(unless: sent)
        }
        _ = report(unless: sent)
    }

    /// Sends the head unless it is `sent`; returns what is now known to be sent.
    func report(unless sent: AuditHead?) -> AuditHead? {
        guard let head = audit.head, head != sent else { return sent }
        var f = Allot_V1_Frame()
        f.auditHead.file = head.file
        f.auditHead.sequence = head.sequence
        f.auditHead.mac = head.mac
        return client.sendToAnyCoordinator(f) ? head : sent
    }
}
