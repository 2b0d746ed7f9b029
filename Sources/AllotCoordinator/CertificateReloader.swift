import AllotTransport
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

/// Reloads the coordinator's certificates and deny list, as a `Service` of its own: on
/// SIGHUP, and when the files change on disk (checked every `interval`). Connections and
/// leases carry on; connections whose certificate the new deny list names are closed. A set
/// of files that does not load is logged and the previous one kept.
final class CertificateReloader: Service, Sendable {
    private let tls: TLSMaterialStore
    private let core: CoordinatorCore
    private let files: [String]
    private let interval: Duration
    private let logger: Logger

    init(tls: TLSMaterialStore, core: CoordinatorCore, files: [String], interval: Duration = .seconds(2), logger: Logger) {
        self.tls = tls
        self.core = core
        self.files = files
        self.interval = interval
        self.logger = logger
    }

    static func modificationDates(_ paths: [String]) -> [Date?] {
        paths.map { (try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate]) as? Date }
    }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await withDiscardingTaskGroup { tasks in
            tasks.addTask { [self] in
                for await _ in signals.cancelOnGracefulShutdown() { reload(because: "SIGHUP") }
            }
            tasks.addTask { [self] in
                var stamps = Self.modificationDates(files)
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
                    let now = Self.modificationDates(files)
                    if now != stamps, !Task.isShuttingDownGracefully {
                        stamps = now
                        reload(because: "certificate files changed")
                    }
                }
            }
        }
    }

    private func reload(because reason: String) {
        do {
            try tls.reload()
            let closed = core.disconnect(denied: tls.current.denyList)
            logger.info("reloaded TLS certificates and the deny list",
                        metadata: ["allot.reason": "\(reason)", "allot.denied_connections_closed": "\(closed)"])
        } catch {
            logger.error("TLS reload failed; keeping the previous certificates",
                         metadata: ["allot.reason": "\(reason)", "allot.error": "\(error)"])
        }
    }
}
