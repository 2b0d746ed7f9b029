import ServiceLifecycle
import UnixSignals

/// Runs `reload` at every SIGHUP, as a `Service` of the gateway's `ServiceGroup` (the
/// consumers file and the certificates are read again; a reload that fails keeps the
/// previous ones, which `reload` logs).
public struct HangupReloader: Service {
    private let reload: @Sendable () -> Void

    public init(reload: @escaping @Sendable () -> Void) {
        self.reload = reload
    }

    public func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() { reload() }
    }
}
