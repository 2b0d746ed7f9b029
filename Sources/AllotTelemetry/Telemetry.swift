import Logging
import Metrics
import NIOConcurrencyHelpers
import OTel
import Prometheus
import ServiceLifecycle
import Tracing

/// A process's telemetry beyond its own Prometheus registry: the OTLP tracer (off unless an
/// endpoint is given) and swift-metrics, whose global factory writes into that registry so the
/// libraries that report through swift-metrics (Hummingbird's `MetricsMiddleware`) are scraped
/// beside Allot's own metrics.
public enum Telemetry {
    /// An OTLP/HTTP tracer sending to `endpoint` (a collector's base address, e.g.
    /// `http://127.0.0.1:4318`; spans go to `<endpoint>/v1/traces`) and the service that batches
    /// and exports its spans, to run in the process's `ServiceGroup`. `json` picks OTLP's JSON
    /// encoding instead of protobuf. Every span is sampled. swift-otel's own diagnostics go to
    /// `logger` (nil: swift-otel's console logger).
    public static func otlpTracer(endpoint: String, serviceName: String, json: Bool = false, exportEvery: Duration = .seconds(1),
                                  logger: Logger? = nil) throws -> (tracer: any Tracer, service: any Service) {
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw TelemetryError("--otlp-endpoint must start with http:// or https://, got '\(endpoint)'")
        }
        var config = OTel.Configuration.default
        config.serviceName = serviceName
        config.logs.enabled = false
        config.metrics.enabled = false
        config.traces.enabled = true
        config.traces.sampler = .alwaysOn
        config.traces.exporter = .otlp
        config.traces.batchSpanProcessor.scheduleDelay = exportEvery
        config.traces.otlpExporter.protocol = json ? .httpJSON : .httpProtobuf
        config.traces.otlpExporter.endpoint = endpoint.hasSuffix("/") ? "\(endpoint)v1/traces" : "\(endpoint)/v1/traces"
        config.propagators = [.traceContext]
        if let logger { config.diagnosticLogger = .custom(logger) }
        let backend = try OTel.makeTracingBackend(configuration: config)
        return (backend.factory, backend.service)
    }

    private static let bootstrapped = NIOLockedValueBox<ObjectIdentifier?>(nil)

    /// Points swift-metrics at `registry` for the rest of the process (swift-metrics allows one
    /// bootstrap per process). Returns false, changing nothing, when it was already bootstrapped
    /// onto another registry.
    @discardableResult
    public static func bootstrapMetrics(into registry: PrometheusCollectorRegistry) -> Bool {
        bootstrapped.withLockedValue { current in
            if let current { return current == ObjectIdentifier(registry) }
            var factory = PrometheusMetricsFactory(registry: registry)
            // swift-metrics labels use dots ("http.server.request.duration"); Prometheus wants `_`.
            factory.nameAndLabelSanitizer = { name, labels in
                (Self.promName(name), labels.map { (Self.promName($0.0), $0.1) })
            }
            MetricsSystem.bootstrap(factory)
            current = ObjectIdentifier(registry)
            return true
        }
    }
}

extension Telemetry {
    /// A metric or label name as Prometheus spells it: anything but `[A-Za-z0-9_:]` becomes `_`.
    static func promName(_ name: String) -> String {
        String(String.UnicodeScalarView(name.unicodeScalars.map { s in
            (s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "_" || s == ":")) ? s : "_"
        }))
    }
}

/// A telemetry setting that cannot be used.
public struct TelemetryError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
