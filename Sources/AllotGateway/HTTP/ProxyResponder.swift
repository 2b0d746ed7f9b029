import AllotCore
import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1

/// The gateway's front door: authenticate, check entitlements, plan the bound, reserve,
/// forward to the upstream with AsyncHTTPClient, stream the answer back as it comes while
/// watching for `usage`, then settle. Every exit settles the reservation exactly once.
struct ProxyResponder: Sendable {
    let core: GatewayCore
    let client: HTTPClient
    let upstreamKey: String?

    var config: GatewayConfig { core.config }

    func respond(_ request: Request) async -> Response {
        let path = request.uri.path
        let route = Route(path: path)
        let entry: ConsumerDirectory.Entry
        do { entry = try core.authenticate(authorization: request.headers[.authorization]) } catch {
            return HTTPSupport.error(error)
        }
        let plan: RequestPlan
        do {
            try core.checkEntitlements(entry, route: route, chainDepth: HTTPSupport.header(request, config.chainDepthHeader))
            let body = try await HTTPSupport.body(request, limit: config.maxBodyBytes)
            plan = try RequestPlan.make(route: route, body: body, models: config.models,
                                        entitlements: core.entitlements(for: entry), tier: entry.consumer.tier)
        } catch {
            core.record(entry, plan: nil, route: route, decision: "reject", error: error)
            return HTTPSupport.error(error)
        }
        let admission: Admission
        switch await core.admit(entry, plan: plan) {
        case .success(let a): admission = a
        case .failure(let e): return HTTPSupport.error(e, headers: core.headers(for: entry, plan: plan, error: e))
        }
        return await forward(request, plan: plan, admission: admission)
    }

    private func forward(_ request: Request, plan: RequestPlan, admission: Admission) async -> Response {
        var target = config.upstream.absoluteString
        if target.hasSuffix("/") { target.removeLast() }
        // The upstream URL may carry a base path (`http://host/openai`); the request path follows it.
        var upstream = HTTPClientRequest(url: target + request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !HTTPSupport.hopByHop.contains(field.name.canonicalName) && field.name != .authorization {
            upstream.headers.add(name: field.name.rawName, value: field.value)
        }
        if let upstreamKey { upstream.headers.add(name: "authorization", value: "Bearer \(upstreamKey)") }
        upstream.body = .bytes(ByteBuffer(bytes: plan.body))
        let sent = ContinuousClock.now
        let response: HTTPClientResponse
        do {
            response = try await client.execute(upstream, timeout: .nanoseconds(config.upstreamTimeout.nanoseconds))
        } catch {
            let timeout = Self.isTimeout(error)
            core.metrics.upstreamError(timeout ? "timeout" : "unreachable")
            let status = timeout ? 504 : 502
            admission.settle(.upstreamFailed(status: status))
            let e = GatewayError(status, type: "server_error", code: timeout ? "upstream_timeout" : "upstream_unreachable",
                                 timeout ? "the upstream did not answer within \(config.upstreamTimeout); nothing was charged"
                                         : "the upstream \(config.upstream.absoluteString) could not be reached (\(error)); nothing was charged")
            return HTTPSupport.error(e, headers: admission.headers)
        }
        let status = Int(response.status.code)
        var headers = HTTPFields()
        for h in response.headers where !HTTPSupport.hopByHop.contains(h.name.lowercased()) {
            if let name = HTTPField.Name(h.name) { headers.append(HTTPField(name: name, value: h.value)) }
        }
        HTTPSupport.add(admission.headers, to: &headers)
        let streaming = plan.stream || (response.headers.first(name: "content-type") ?? "").contains("text/event-stream")
        let length = response.headers.first(name: "content-length").flatMap(Int.init)
        let metrics = core.metrics
        let body = ResponseBody(contentLength: length) { writer in
            var scanner = UsageScanner(streaming: streaming)
            var first = true
            do {
                for try await chunk in response.body {
                    if first && streaming { metrics.streamFirstByte(ContinuousClock.now - sent) }
                    first = false
                    scanner.consume(chunk.readableBytesView)
                    try await writer.write(chunk)
                }
                scanner.finish()
                metrics.upstream(latency: ContinuousClock.now - sent)
                if let usage = scanner.usage {
                    admission.settle(.usage(usage, status: status))
                } else if status >= 400 {
                    admission.settle(.upstreamError(status: status))
                } else {
                    admission.settle(.incomplete(status: status))
                }
                try await writer.finish(nil)
            } catch {
                // The upstream cut the body, went silent, or the client went away.
                metrics.upstreamError("cut")
                admission.settle(.incomplete(status: status))
                throw error
            }
        }
        return Response(status: .init(code: status), headers: headers, body: body)
    }

    static func isTimeout(_ error: any Error) -> Bool {
        if let e = error as? HTTPClientError {
            return e == .deadlineExceeded || e == .readTimeout || e == .connectTimeout || e == .getConnectionFromPoolTimeout
        }
        return false
    }
}
