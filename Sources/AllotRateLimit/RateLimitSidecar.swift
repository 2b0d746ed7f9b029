import AllotCore
import AllotNode
import AllotTransport
import Foundation
import Logging

/// One `allot ratelimit-service` node: the envoyproxy/ratelimit rules, this node's leases (a
/// `SharedEnforcer` fed by a `LeaseClient` from the coordinators) and the gRPC listener Envoy
/// calls. Every budget is leased as a gateway's are; each decision is local.
public final class RateLimitSidecar: Sendable {
    public let core: RateLimitCore
    public let client: LeaseClient
    let logger: Logger

    /// `seeds` and `dial`: how the node reaches the coordinators (`TLSLeaseTransport.dialer`
    /// in production); `lease`: the deployment's lease settings (TTL, refresh interval).
    public init(name: String, rules: DescriptorRules, seeds: [String], dial: @escaping @Sendable (String) -> (any LeaseTransport)?,
                lease: AllocatorSettings = AllocatorSettings(), settings: RateLimitCore.Settings = RateLimitCore.Settings(),
                logger: Logger) throws {
        var es = EnforcerSettings(node: NodeID(name))
        es.leaseTTL = lease.leaseTTL
        es.refreshInterval = lease.refreshInterval
        es.renewMargin = min(es.renewMargin, es.leaseTTL / 3)
        let enforcer = try SharedEnforcer(settings: es)
        var logger = logger
        logger[metadataKey: "allot.node"] = "\(name)"
        let client = LeaseClient(enforcer: enforcer, seeds: seeds, logger: logger, dial: dial)
        self.client = client
        self.logger = logger
        core = RateLimitCore(rules: rules, enforcer: enforcer, settings: settings, poke: { [weak client] in client?.pollNow() },
                             connected: { [weak client] in client?.isConnected ?? false })
    }

    /// Runs the lease client and the gRPC listener on `host:port` until the task is cancelled,
    /// then gives every lease back. `onListening` gets the bound port.
    public func run(host: String, port: Int, onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let server = RateLimitServer(core: core, host: host, port: port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [client] in await client.run() }
            group.addTask { try await server.run(onListening: onListening) }
            defer { group.cancelAll() }
            try await group.next()
        }
    }
}
