import Hummingbird
import Prometheus

/// What the libraries report through swift-metrics: `allot coordinator` bootstraps swift-metrics
/// onto `registry`, and `/metrics` shows it after the coordinator's own lines. The admin
/// listeners count their requests with Hummingbird's `MetricsMiddleware`.
public enum LibraryMetrics {
    public static let registry = PrometheusCollectorRegistry()

    /// `respond`, each request counted by `MetricsMiddleware` under the `http_route` label
    /// `route` gives (a fixed set of names, never the raw path).
    static func counted<Context: RequestContext>(route: @escaping @Sendable (Request) -> String,
                                                 _ respond: @escaping @Sendable (Request, Context) async -> Response) -> CallbackResponder<Context> {
        let middleware = MetricsMiddleware<Context>()
        return CallbackResponder { request, context in
            context.coreContext.endpointPath.value = route(request)
            // `respond` never throws, so neither does the middleware.
            return (try? await middleware.handle(request, context: context) { r, c in await respond(r, c) })
                ?? Response(status: .internalServerError)
        }
    }
}
