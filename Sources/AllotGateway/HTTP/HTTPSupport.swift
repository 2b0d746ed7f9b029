import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// Small helpers shared by the proxy, the admin listener and the mock upstream.
package enum HTTPSupport {
    package static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"]

    /// The headers a message's `Connection` values name: hop-by-hop too (RFC 9110 §7.6.1).
    package static func nominated(_ connection: some Sequence<String>) -> Set<String> {
        Set(connection.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
    }

    /// A plain HTTP/1.1 listener answering every request with `respond`; `onBound` gets the
    /// port once it listens (port 0 picks a free one).
    /// A listener; with `deadlines`, its clients' slow heads, bodies and idle keep-alives are
    /// cut off (`ClientDeadlineHandler`), each cut reported to `expired`.
    /// Each request is counted by Hummingbird's `MetricsMiddleware` (swift-metrics: `hb_requests`,
    /// `http_server_request_duration`, `http_server_active_requests`), its `http_route` label
    /// given by `route` (a fixed set of names, never the raw path) or set by `respond` through
    /// the `EndpointPath` it is handed (the proxy, once it has matched the route).
    package static func listener(host: String, port: Int, logger: Logger, deadlines: ClientDeadlineLimits? = nil,
                         expired: @escaping @Sendable (String) -> Void = { _ in },
                         route: @escaping @Sendable (Request) -> String,
                         respond: @escaping @Sendable (Request, EndpointPath) async -> Response,
                         onBound: @escaping @Sendable (Int) -> Void) -> Application<CallbackResponder<BasicRequestContext>> {
        let handlers: @Sendable () -> [any RemovableChannelHandler] = {
            deadlines.map { [ClientDeadlineHandler(limits: $0, expired: expired)] } ?? []
        }
        let counted = MetricsMiddleware<BasicRequestContext>()
        return Application(responder: CallbackResponder<BasicRequestContext> { request, context in
                               context.coreContext.endpointPath.value = route(request)
                               // `respond` never throws, so neither does the middleware.
                               return (try? await counted.handle(request, context: context) { r, c in await respond(r, c.coreContext.endpointPath) })
                                   ?? Response(status: .internalServerError)
                           },
                           server: .http1(configuration: .init(additionalChannelHandlers: handlers())),
                           configuration: .init(address: .hostname(host, port: port)),
                           onServerRunning: { channel in onBound(channel.localAddress?.port ?? 0) }, logger: logger)
    }

    package static func json(_ status: Int, _ object: Any, headers extra: [(String, String)] = []) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return bytes(status, data, contentType: "application/json", headers: extra)
    }

    package static func bytes(_ status: Int, _ data: Data, contentType: String, headers extra: [(String, String)] = []) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        add(extra, to: &headers)
        return Response(status: .init(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    package static func error(_ e: GatewayError, headers extra: [(String, String)] = [], anthropic: Bool = false) -> Response {
        bytes(e.status, anthropic ? e.anthropicBody : e.body, contentType: "application/json", headers: extra)
    }

    package static func add(_ pairs: [(String, String)], to headers: inout HTTPFields) {
        for (k, v) in pairs {
            if let name = HTTPField.Name(k) { headers.append(HTTPField(name: name, value: v)) }
        }
    }

    package static func header(_ request: Request, _ name: String) -> String? {
        HTTPField.Name(name).flatMap { request.headers[$0] }
    }

    /// Collects a request body up to `limit`, or throws a 413 `GatewayError`.
    package static func body(_ request: Request, limit: Int) async throws(GatewayError) -> Data {
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Data(buffer.readableBytesView)
        } catch {
            throw GatewayError(413, type: "invalid_request_error", code: "body_too_large",
                               "the request body is larger than \(limit) bytes (gateway.max_body_bytes)")
        }
    }
}
