import AllotTelemetry
import ArgumentParser
import Logging
import ServiceLifecycle
import Tracing

/// `--otlp-endpoint`: tracing, off unless given. The standard `OTEL_*` environment variables
/// (e.g. `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json`, `OTEL_EXPORTER_OTLP_HEADERS`) apply on top.
struct TelemetryOptions: ParsableArguments {
    @Option(help: "Send trace spans over OTLP/HTTP to this collector (e.g. http://127.0.0.1:4318; spans go to <url>/v1/traces). Off by default.")
    var otlpEndpoint: String?

    /// The tracer and its exporting service (to run first in the group: it stops last and
    /// flushes the last spans), or nil when tracing is off.
    func tracer(serviceName: String, logger: Logger) throws -> (tracer: any Tracer, service: any Service)? {
        guard let otlpEndpoint else { return nil }
        do {
            return try Telemetry.otlpTracer(endpoint: otlpEndpoint, serviceName: serviceName, logger: logger)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}
