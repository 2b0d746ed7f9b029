import AllotConfig
import AllotCore
import AllotNode
import AllotTransport
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Tracing

/// One gateway node: the proxy listener, the loopback admin/sidecar listener, the lease
/// client that keeps its budgets fed, the audit-head reporter, and the upstream HTTP client.
/// Each is a swift-service-lifecycle `Service`: `services()` lists them for the executable's
/// one `ServiceGroup`; `run()` runs them in a group of their own (a gateway embedded in a
/// test or the demo). On graceful shutdown it stops taking requests, lets those in flight
/// finish (and settle), then releases every lease.
public final class GatewayService: Service, Sendable {
    public let core: GatewayCore
    public let leaseClient: LeaseClient
    private let sidecar: Sidecar
    private let httpClient: HTTPClient
    private let logger: Logger
    private let tracer: (any Tracer)?
    private let onListening: @Sendable (_ proxyPort: Int, _ adminPort: Int) -> Void

    /// Applies the cached consumer directory, then each newer one the coordinators send
    /// (kept in `cache`).
    static func followDirectory(core: GatewayCore, client: LeaseClient, cache: String?, logger: Logger) {
        do {
            if let cache, let held = try GatewayCore.loadDirectory(from: cache) {
                core.apply(directory: held.directory, version: held.version)
                logger.info("consumer directory from the cache", metadata: ["allot.version": "\(held.version)", "allot.file": "\(cache)"])
            }
        } catch {
            // Start without it: the coordinators send the directory after hello.
            core.metrics.directoryUnreadable()
            logger.error("the consumer directory cache cannot be read; starting without it", metadata: ["allot.error": "\(error)"])
        }
        client.onDirectory(have: { [weak core] in core?.directoryVersion ?? 0 }) { [weak core] version, document in
            guard let core else { return }
            let d: Directory
            do { d = try Directory(decoding: document) } catch {
                core.metrics.directoryUnreadable()
                return logger.error("consumer directory not applied", metadata: ["allot.version": "\(version)", "allot.error": "\(error)"])
            }
            guard core.apply(directory: d, version: version) else { return }
            logger.info("consumer directory", metadata: ["allot.version": "\(version)", "allot.keys": "\(d.keys.count)"])
            guard let cache else { return }
            // Off the event loop that received it: a slow disk must not hold up leases.
            Task.detached {
                do { try core.saveDirectory(to: cache) } catch {
                    core.metrics.directoryCacheFailed()
                    logger.error("cannot write the consumer directory cache (applied all the same)", metadata: ["allot.error": "\(error)"])
                }
            }
        }
    }

    /// Applies the cached policy, then each newer one the coordinators send (kept beside the
    /// directory cache). A policy this gateway cannot take is logged, counted and skipped.
    static func followPolicy(core: GatewayCore, client: LeaseClient, directoryCache: String?, logger: Logger) {
        let cache = GatewayCore.policyCache(directoryCache)
        do {
            if let cache, let held = try GatewayCore.loadPolicy(from: cache) {
                _ = take(held.yaml, held.version, from: cache, core: core, logger: logger)
            }
        } catch {
            core.metrics.policyUnreadable()
            logger.error("the policy cache cannot be read; starting with the file's", metadata: ["allot.error": "\(error)"])
        }
        client.onConfig(have: { [weak core] in core?.policyVersion ?? 0 }) { [weak core] version, document in
            guard let core, take(String(decoding: document, as: UTF8.self), version, from: "coordinator", core: core, logger: logger),
                  let cache else { return }
            Task.detached {
                do { try core.savePolicy(to: cache) } catch {
                    core.metrics.policyUnreadable()
                    logger.error("cannot write the policy cache (applied all the same)", metadata: ["allot.error": "\(error)"])
                }
            }
        }
    }

    /// Applies a policy version; false (logged, counted) when it is not newer or cannot be taken.
    private static func take(_ yaml: String, _ version: UInt64, from source: String, core: GatewayCore, logger: Logger) -> Bool {
        do {
            guard try core.apply(policy: yaml, version: version) else { return false }
            logger.notice("policy in force", metadata: ["allot.version": "\(version)", "allot.from": "\(source)"])
            return true
        } catch {
            core.metrics.policyUnreadable()
            logger.error("policy not applied", metadata: ["allot.version": "\(version)", "allot.error": "\(error)"])
            return false
        }
    }

    /// `transport`: how this node reaches its one coordinator.
    public convenience init(config: GatewayConfig, consumers: ConsumerDirectory, transport: any LeaseTransport,
                            clientSettings: LeaseClient.Settings = LeaseClient.Settings(), logger: Logger,
                            onListening: @escaping @Sendable (_ proxyPort: Int, _ adminPort: Int) -> Void = { _, _ in },
                            observer: GatewayEvent.Observer? = nil, tracer: (any Tracer)? = nil) throws {
        try self.init(config: config, consumers: consumers, seeds: [""], dial: { _ in transport }, clientSettings: clientSettings,
                      logger: logger, onListening: onListening, observer: observer, tracer: tracer)
    }

    /// `seeds` and `dial`: how this node reaches the coordinators (`TLSLeaseTransport.dialer`
    /// in production).
    /// `tracer`: spans for each proxied request (nil: tracing off).
    public init(config: GatewayConfig, consumers: ConsumerDirectory, seeds: [String],
                dial: @escaping @Sendable (String) -> (any LeaseTransport)?,
                clientSettings: LeaseClient.Settings = LeaseClient.Settings(), logger: Logger,
                onListening: @escaping @Sendable (_ proxyPort: Int, _ adminPort: Int) -> Void = { _, _ in },
                observer: GatewayEvent.Observer? = nil, tracer: (any Tracer)? = nil) throws {
        self.tracer = tracer
        var settings = EnforcerSettings(node: NodeID(config.name))
        settings.leaseTTL = config.shared.allocator.leaseTTL
        settings.refreshInterval = config.shared.allocator.refreshInterval
        settings.renewMargin = min(settings.renewMargin, settings.leaseTTL / 3)
        let enforcer = try SharedEnforcer(settings: settings)
        var logger = logger
        logger[metadataKey: "allot.node"] = "\(config.name)"
        let client = LeaseClient(enforcer: enforcer, seeds: seeds, settings: clientSettings, logger: logger, dial: dial)
        let auditKey = try config.auditKeyFile.map { try AuditLog.loadKey(path: $0) }
        if config.auditDirectory != nil && auditKey == nil {
            logger.warning("gateway.audit_key_file is not set: the audit chain is plain SHA-256 (it finds accidents, not a rewrite)")
        }
        let audit = try config.auditDirectory.map {
            try AuditLog(directory: URL(fileURLWithPath: $0), maxBytes: config.auditMaxBytes, key: auditKey, node: config.name)
        }
        core = try GatewayCore(config: config, consumers: consumers, enforcer: enforcer, audit: audit,
                               poke: { [weak client] in client?.pollNow() },
                               connected: { [weak client] in client?.isConnected ?? false }, observer: observer,
                               lookup: { [weak client] budgets in await client?.lookup(budgets) ?? LeaseClient.Lookup() })
        leaseClient = client
        Self.followDirectory(core: core, client: client, cache: config.directoryCache, logger: logger)
        Self.followPolicy(core: core, client: client, directoryCache: config.directoryCache, logger: logger)
        sidecar = Sidecar(core: core)
        var http = HTTPClient.Configuration()
        http.timeout = .init(connect: .seconds(2), read: .nanoseconds(config.upstreamIdleTimeout.nanoseconds))
        // Fail fast when the upstream is down (a 502 now beats a 504 later); keep many
        // connections for long streams.
        http.connectionPool.retryConnectionEstablishment = false
        http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 512
        // An upstream that compresses anyway (we ask for identity) is decompressed: usage must be read.
        http.decompression = .enabled(limit: .size(256 << 20))
        httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        self.logger = logger
        self.onListening = onListening
    }

    /// Every part, in start order (made anew at each call). A `ServiceGroup` stops them in
    /// reverse: the proxy first, then the sidecar's held reservations are settled, the last
    /// audit head goes out, the lease client gives everything back, and the upstream client
    /// and the audit file close last.
    public func services() -> [any Service] {
        let config = core.config
        let upstreamKey = config.upstreamKeyEnv.flatMap { ProcessInfo.processInfo.environment[$0] }
        let proxy = ProxyResponder(core: core, client: httpClient, upstreamKey: upstreamKey, logger: config.accessLog ? logger : nil,
                                   tracer: tracer)
        let admin = AdminResponder(core: core, sidecar: sidecar, ready: { [leaseClient] in leaseClient.isConnected })
        // Both ports are announced together, once both listeners are bound.
        let ports = Mutex<[Int?]>([nil, nil])
        let bound: @Sendable (Int, Int) -> Void = { [onListening] slot, port in
            let p = ports.withLock { p in p[slot] = port; return p }
            if let a = p[0], let b = p[1] { onListening(a, b) }
        }
        var httpLogger = logger
        httpLogger.logLevel = .error
        let deadlines = ClientDeadlineHandler.Limits(header: config.clientHeaderTimeout, body: config.clientBodyTimeout,
                                                     idle: config.clientIdleTimeout)
        let metrics = core.metrics
        let proxyApp = HTTPSupport.listener(host: config.listenHost, port: config.listenPort, logger: httpLogger, deadlines: deadlines,
                                            expired: { metrics.clientTimeout(listener: "proxy", kind: $0) },
                                            route: { _ in "other" }, respond: { await proxy.respond($0, route: $1) }, onBound: { bound(0, $0) })
        let adminApp = HTTPSupport.listener(host: config.adminHost, port: config.adminPort, logger: httpLogger, deadlines: deadlines,
                                            expired: { metrics.clientTimeout(listener: "admin", kind: $0) },
                                            route: AdminResponder.route, respond: { r, _ in await admin.respond(r) }, onBound: { bound(1, $0) })
        var services: [any Service] = [Closer(client: httpClient, audit: core.audit), leaseClient, sidecar, adminApp, proxyApp]
        if let audit = core.audit {
            // After the proxy in shutdown order: the last head goes out before the leases do.
            services.insert(AuditHeadReporter(audit: audit, client: leaseClient, interval: config.auditReportInterval), at: 2)
        }
        if let (host, port) = config.metricsAddress {
            // Only what Prometheus and probes need: the sidecar is not reachable here.
            let logger = self.logger
            services.insert(HTTPSupport.listener(host: host, port: port, logger: httpLogger, deadlines: deadlines,
                                                 expired: { metrics.clientTimeout(listener: "metrics", kind: $0) },
                                                 route: AdminResponder.route, respond: { r, _ in await admin.respondMetricsOnly(r) },
                                                 onBound: { logger.info("metrics listening", metadata: ["allot.port": "\($0)"]) }), at: 3)
        }
        return services
    }

    /// The parts in a group of their own, stopped when this service is told to stop.
    public func run() async throws {
        let group = ServiceGroup(configuration: .init(services: services(), logger: logger))
        try await withGracefulShutdownHandler {
            try await group.run()
        } onGracefulShutdown: {
            Task { await group.triggerGracefulShutdown() }
        }
    }

    /// Closes the upstream HTTP client and the audit log after every other part has stopped
    /// (first in the group, so last to stop), or when the group fails.
    private struct Closer: Service {
        let client: HTTPClient
        let audit: AuditLog?

        func run() async throws {
            try? await gracefulShutdown()
            try await client.shutdown()
            try audit?.close()
        }
    }
}
