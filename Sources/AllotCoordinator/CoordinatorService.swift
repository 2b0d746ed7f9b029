import AllotTransport
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// `allot coordinator` as a swift-service-lifecycle `Service`: its `run()` is its whole
/// life. Starts the mTLS listener and the admin endpoint, reloads certificates on SIGHUP
/// (existing connections and leases carry on), and on graceful shutdown (SIGTERM) tells
/// every peer, closes the listener and returns.
public final class CoordinatorService: Service, Sendable {
    public let config: CoordinatorConfig
    public let core: CoordinatorCore
    private let tls: TLSMaterialStore
    private let logger: Logger
    private let group: any EventLoopGroup
    private let ready = Mutex(false)
    /// Called once both listeners are bound (the coordinator and admin addresses).
    private let onListening: @Sendable (SocketAddress, SocketAddress) -> Void

    public init(config: CoordinatorConfig, core: CoordinatorCore, tls: TLSMaterialStore, logger: Logger,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                onListening: @escaping @Sendable (SocketAddress, SocketAddress) -> Void = { _, _ in }) {
        self.config = config
        self.core = core
        self.tls = tls
        self.logger = logger
        self.group = group
        self.onListening = onListening
    }

    static func modificationDates(_ paths: [String]) -> [Date?] {
        paths.map { (try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate]) as? Date }
    }

    /// True while the listener accepts lease traffic (`/readyz`).
    public var isReady: Bool { ready.withLock { $0 } }

    public func run() async throws {
        let server = CoordinatorServer(core: core, tls: tls, group: group, logger: logger)
        let admin = AdminServer(core: core, group: group, ready: { [self] in self.isReady })
        let address = try await server.start(host: config.listenHost, port: config.listenPort)
        let adminAddress = try await admin.start(host: config.adminHost, port: config.adminPort)
        ready.withLock { $0 = true }
        onListening(address, adminAddress)

        signal(SIGHUP, SIG_IGN)
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP)
        hup.setEventHandler { [tls, logger] in
            do {
                try tls.reload()
                logger.info("reloaded TLS certificates")
            } catch {
                logger.error("TLS reload failed; keeping the previous certificates", metadata: ["allot.error": "\(error)"])
            }
        }
        hup.resume()
        defer { hup.cancel() }
        // Also reload when the certificate files change on disk (checked every 2 s).
        let files = ["ca.pem", "coordinator-\(config.name).pem", "coordinator-\(config.name)-key.pem"].map {
            URL(fileURLWithPath: config.tlsDirectory).appendingPathComponent($0).path
        }
        let stamps = Mutex(Self.modificationDates(files))
        let watcher = group.next().scheduleRepeatedTask(initialDelay: .seconds(2), delay: .seconds(2)) { [tls, logger] _ in
            let now = Self.modificationDates(files)
            guard stamps.withLock({ old in defer { old = now }; return old != now }) else { return }
            do {
                try tls.reload()
                logger.info("certificate files changed: reloaded TLS certificates")
            } catch {
                logger.error("certificate files changed but do not load; keeping the previous ones", metadata: ["allot.error": "\(error)"])
            }
        }
        defer { watcher.cancel() }

        try? await gracefulShutdown()
        logger.info("shutting down: draining connections")
        ready.withLock { $0 = false }
        try await server.shutdown()
        await admin.shutdown()
    }
}
