import AllotCore
import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Tracing

/// The gateway's front door: authenticate, check entitlements, plan the bound, reserve,
/// forward to the upstream with AsyncHTTPClient, stream the answer back as it comes while
/// watching for `usage`, then settle. Every exit settles the reservation exactly once.
struct ProxyResponder: Sendable {
    let core: GatewayCore
    let client: HTTPClient
    let upstreamKey: String?
    /// The access log (`--access-log`): one line per request, when its answer starts.
    let logger: Logger?
    /// Spans for each request (`--otlp-endpoint`); nil when tracing is off.
    let tracer: (any Tracer)?

    /// The file's settings (routes, body limit, upstream): a policy version never changes them.
    var config: GatewayConfig { core.fileConfig }
    /// The caller's own budgets, fleet-wide (`GatewayCore.usage`), authenticated by its key.
    static let usagePath = "/v1/allot/usage"

    func usage(_ request: Request, _ entry: ConsumerDirectory.Entry) async -> Response {
        guard request.method == .get else {
            core.metrics.rejected("usage_method")
            return HTTPSupport.error(GatewayError(405, type: "invalid_request_error", code: "method_not_allowed", "\(Self.usagePath) answers GET only"))
        }
        do {
            let lines = try await core.usage(entry)
            return HTTPSupport.json(200, GatewayCore.usageJSON(entry, lines, now: core.now()), headers: [("cache-control", "no-store")])
        } catch {
            return HTTPSupport.error(error)
        }
    }

    /// Every answer carries the request's id in `x-allot-request-id` (the caller's
    /// `x-request-id` when it is printable and at most 128 bytes, else a new one); with the
    /// access log on, one line per request carries it, and the W3C `traceparent` the request
    /// came with when it is well-formed. `route` takes the request's `http_route` label once its
    /// route is matched: the route's name (`chat`, `messages`, …) or `usage` (the listener's
    /// default, `other`, stays for anything passed through, unknown or not canonical).
    func respond(_ request: Request, route: EndpointPath) async -> Response {
        let started = ContinuousClock.now
        let id = HTTPSupport.header(request, "x-request-id").flatMap { Self.printable($0, max: 128) } ?? UUID().uuidString.lowercased()
        let trace = RequestTrace.start(tracer, request, id: id)
        var response = await handle(request, trace, route: route)
        // The upstream's own x-request-id (a provider's, for its support) is left as it is.
        response.headers[HTTPField.Name("x-allot-request-id")!] = id
        trace?.finish(&response)
        if var logger {
            logger[metadataKey: "allot.request_id"] = "\(id)"
            if let t = HTTPSupport.header(request, "traceparent"), Self.isTraceparent(t) { logger[metadataKey: "trace.traceparent"] = "\(t)" }
            let d = (ContinuousClock.now - started).components
            let ms = Double(d.seconds) * 1e3 + Double(d.attoseconds) / 1e15
            logger.info("request", metadata: ["http.method": "\(request.method.rawValue)", "http.path": "\(request.uri.path)",
                                              "http.status": "\(response.status.code)", "allot.latency_ms": "\(ms.rounded(toPlaces: 3))"])
        }
        return response
    }

    /// A W3C `traceparent`: version-traceid-parentid-flags in lowercase hex (2-32-16-2), the
    /// trace and parent ids not all zero.
    static func isTraceparent(_ s: String) -> Bool {
        let parts = s.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.map(\.utf8.count) == [2, 32, 16, 2], parts[0] != "ff" else { return false }
        let hex = parts.allSatisfy { $0.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) } }
        return hex && parts[1].contains { $0 != "0" } && parts[2].contains { $0 != "0" }
    }

    /// `s` when it is 1 to `max` bytes of printable ASCII (no spaces).
    static func printable(_ s: String, max: Int) -> String? {
        !s.isEmpty && s.utf8.count <= max && s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f } ? s : nil
    }

    private func handle(_ request: Request, _ trace: RequestTrace?, route label: EndpointPath) async -> Response {
        // A path that is not canonical is refused before anything else: spelled another way
        // it could mean one route here and another upstream.
        let target = request.uri.string
        let matched = config.routes.match(method: request.method.rawValue, target: target)
        let anthropic = matched == .route(.messages)
        if matched == .nonCanonical {
            core.metrics.rejected("non_canonical_path")
            return HTTPSupport.error(.badRequest("non_canonical_path",
                                                 "the path is not canonical (empty, '.' or '..' segments, ';', percent-encoding, a trailing '/' or the wrong case)"))
        }
        let isUsage = target.prefix(while: { $0 != "?" && $0 != "#" }) == Self.usagePath
        if isUsage { label.value = "usage" } else if case .route(let r) = matched { label.value = r.rawValue }
        let entry: ConsumerDirectory.Entry
        do {
            // Anthropic's clients send their key as `x-api-key`.
            let key = request.headers[.authorization] ?? (anthropic ? HTTPSupport.header(request, "x-api-key").map { "Bearer " + $0 } : nil)
            entry = try core.authenticate(authorization: key)
        } catch {
            return HTTPSupport.error(error, anthropic: anthropic)
        }
        if isUsage { return await usage(request, entry) }
        let route: Route
        switch matched {
        case .route(let r): route = r
        default:
            let path = target.prefix { $0 != "?" && $0 != "#" }
            guard core.entitlements(for: entry).passThrough.contains(where: { $0.covers(method: request.method.rawValue, path: path) }) else {
                let e = GatewayError(404, type: "invalid_request_error", code: "unknown_url",
                                     "no route for \(request.method.rawValue) \(path) (not in the route table nor in tier \(entry.consumer.tier)'s passthrough)")
                core.record(entry, plan: nil, route: .other, decision: "reject", error: e)
                return HTTPSupport.error(e)
            }
            route = .other
        }
        let plan: RequestPlan
        do {
            try core.checkEntitlements(entry, route: route, chainDepth: HTTPSupport.header(request, config.chainDepthHeader))
            let body = try await HTTPSupport.body(request, limit: config.maxBodyBytes)
            plan = try RequestPlan.make(route: route, body: body, models: core.models,
                                        entitlements: core.entitlements(for: entry), tier: entry.consumer.tier)
        } catch {
            core.record(entry, plan: nil, route: route, decision: "reject", error: error)
            return HTTPSupport.error(error, anthropic: anthropic)
        }
        let admission: Admission
        let reserving = trace?.child("allot.reserve")
        let decided = await core.admit(entry, plan: plan)
        reserving?.span.attributes["allot.tier"] = entry.consumer.tier
        switch decided {
        case .success(let a):
            admission = a
            reserving?.span.attributes["allot.decision"] = "admit"
            reserving?.end()
        case .failure(let e):
            reserving?.span.attributes["allot.decision"] = "deny"
            reserving?.span.attributes["allot.error"] = e.code
            reserving?.end()
            return HTTPSupport.error(e, headers: core.headers(for: entry, plan: plan, error: e),
                                     anthropic: anthropic)
        }
        return await forward(request, plan: plan, admission: admission, trace: trace)
    }

    private func forward(_ request: Request, plan: RequestPlan, admission: Admission, trace: RequestTrace?) async -> Response {
        var target = config.upstream.absoluteString
        if target.hasSuffix("/") { target.removeLast() }
        // The upstream URL may carry a base path (`http://host/openai`); the request path follows it.
        var upstream = HTTPClientRequest(url: target + request.uri.path + (request.uri.query.map { "?" + $0 } ?? ""))
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        let nominated = HTTPSupport.nominated(request.headers[values: .connection])
        for field in request.headers where !Self.notForwarded.contains(field.name.canonicalName) && !nominated.contains(field.name.canonicalName) {
            upstream.headers.add(name: field.name.rawName, value: field.value)
        }
        if let upstreamKey {
            if plan.route.isAnthropic {
                upstream.headers.add(name: "x-api-key", value: upstreamKey)
            } else {
                upstream.headers.add(name: "authorization", value: "Bearer \(upstreamKey)")
            }
        }
        // Usage must be readable: ask for an uncompressed answer (a compressed one is
        // decompressed by the client all the same).
        upstream.headers.add(name: "accept-encoding", value: "identity")
        upstream.body = .bytes(ByteBuffer(bytes: plan.body))
        let calling = trace?.child("upstream.call", kind: .client)
        if let trace, let calling { trace.inject(calling, into: &upstream.headers) }
        let settle = { @Sendable (outcome: GatewayCore.Outcome) in
            if let trace { trace.settle(admission, outcome) } else { admission.settle(outcome) }
        }
        let sent = ContinuousClock.now
        let response: HTTPClientResponse
        do {
            response = try await client.execute(upstream, timeout: .nanoseconds(config.upstreamTimeout.nanoseconds))
        } catch {
            let timeout = Self.isTimeout(error)
            core.metrics.upstreamError(timeout ? "timeout" : "unreachable")
            let status = timeout ? 504 : 502
            calling?.span.recordError(error)
            calling?.span.setStatus(.init(code: .error))
            calling?.end()
            settle(.upstreamFailed(status: status))
            // The upstream's address and the error's text stay in the logs and metrics.
            let e = GatewayError(status, type: "server_error", code: timeout ? "upstream_timeout" : "upstream_unreachable",
                                 timeout ? "the upstream did not answer in time; nothing was charged"
                                         : "the upstream could not be reached; nothing was charged")
            return HTTPSupport.error(e, headers: admission.headers,
                                     anthropic: plan.route.isAnthropic)
        }
        let status = Int(response.status.code)
        calling?.span.attributes["http.response.status_code"] = status
        var headers = HTTPFields()
        let upstreamNominated = HTTPSupport.nominated(response.headers["connection"])
        for h in response.headers where Self.returned(h.name.lowercased()) && !upstreamNominated.contains(h.name.lowercased()) {
            if let name = HTTPField.Name(h.name) { headers.append(HTTPField(name: name, value: h.value)) }
        }
        HTTPSupport.add(admission.headers, to: &headers)
        let streaming = plan.stream || (response.headers.first(name: "content-type") ?? "").contains("text/event-stream")
        // A body the client decompressed has another length than the upstream announced.
        let encoded = response.headers.contains(name: "content-encoding")
        let length = encoded || plan.addedUsage ? nil : response.headers.first(name: "content-length").flatMap(Int.init)
        let metrics = core.metrics
        let body = ResponseBody(contentLength: length) { writer in
            var scanner = UsageScanner(streaming: streaming, api: plan.route.isAnthropic ? .anthropic : .openai)
            var first = true
            var passed = 0
            // The usage chunk the gateway asked for is not the client's to see.
            var filter = plan.addedUsage && streaming && status < 400 ? AddedUsageFilter() : nil
            // Settled before the client has the whole answer: a client that saw the end
            // (with a content-length, before `finish`) never finds its reservation in flight.
            var settled = false
            let finish = { (scanner: inout UsageScanner, settled: inout Bool) in
                guard !settled else { return }
                settled = true
                scanner.finish()
                metrics.upstream(latency: ContinuousClock.now - sent)
                calling?.end()
                // Usage counts only on model routes: a stored response fetched again (`retrieve`)
                // or a passed-through answer reports usage that was charged when it was made.
                if plan.route.isModelRoute, let usage = scanner.usage {
                    settle(.usage(usage, status: status))
                } else if status >= 400 {
                    settle(.upstreamError(status: status))
                } else {
                    settle(.incomplete(status: status))
                }
            }
            do {
                for try await chunk in response.body {
                    if first && streaming { metrics.streamFirstByte(ContinuousClock.now - sent) }
                    first = false
                    scanner.consume(chunk.readableBytesView)
                    passed += chunk.readableBytes
                    if let length, passed >= length { finish(&scanner, &settled) }
                    if var f = filter {
                        let kept = f.pass(chunk.readableBytesView)
                        filter = f
                        if !kept.isEmpty { try await writer.write(ByteBuffer(bytes: kept)) }
                    } else {
                        try await writer.write(chunk)
                    }
                }
                finish(&scanner, &settled)
                if var f = filter {
                    let rest = f.finish()
                    if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
                }
                try await writer.finish(nil)
            } catch {
                // The upstream cut the body, went silent, or the client went away.
                metrics.upstreamError("cut")
                // Settled already when the client went away after the whole body came.
                if !settled {
                    calling?.span.recordError(error)
                    calling?.end()
                    settle(.incomplete(status: status))
                }
                throw error
            }
        }
        return Response(status: .init(code: status), headers: headers, body: body)
    }

    /// Client headers the upstream never sees: hop-by-hop ones, the client's credentials
    /// (the operator's key replaces them), its organisation and project (they would bill
    /// another account), cookies, and its encoding wishes (usage must be readable).
    static let notForwarded: Set<String> = HTTPSupport.hopByHop.union([
        "authorization", "x-api-key", "api-key", "openai-organization", "openai-project", "cookie", "accept-encoding",
    ])

    /// Upstream response headers passed to the client: not hop-by-hop, not the upstream's own
    /// rate-limit headers (ours replace them), no cookies, no encoding (the body was decoded).
    static func returned(_ name: String) -> Bool {
        !HTTPSupport.hopByHop.contains(name) && !name.hasPrefix("x-ratelimit-") && !name.hasPrefix("anthropic-ratelimit-")
            && !["set-cookie", "content-encoding", "retry-after", "retry-after-ms", "openai-organization", "openai-project",
                 "anthropic-organization-id"].contains(name)
    }

    static func isTimeout(_ error: any Error) -> Bool {
        if let e = error as? HTTPClientError {
            return e == .deadlineExceeded || e == .readTimeout || e == .connectTimeout || e == .getConnectionFromPoolTimeout
        }
        return false
    }
}

extension Double {
    func rounded(toPlaces n: Int) -> Double {
        let f = (0..<n).reduce(1.0) { p, _ in p * 10 }
        return (self * f).rounded() / f
    }
}
