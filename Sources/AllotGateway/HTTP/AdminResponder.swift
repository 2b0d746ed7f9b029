import AllotCore
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import ServiceLifecycle
import Synchronization

/// The gateway's loopback listener: `/metrics`, `/healthz`, `/readyz`, and the sidecar API for
/// gateways that are not Allot (Kong, nginx, Envoy): `POST /v1/check` reserves and answers
/// allow or deny with the same headers as the proxy; `POST /v1/settle` settles by id.
struct AdminResponder: Sendable {
    let core: GatewayCore
    let sidecar: Sidecar
    let ready: @Sendable () -> Bool

    /// The paths this listener serves, as `http_route` labels; anything else is `other`.
    static func route(_ request: Request) -> String {
        let path = request.uri.path
        return ["/metrics", "/healthz", "/readyz", "/v1/check", "/v1/settle"].contains(path) ? path : "other"
    }

    func respond(_ request: Request) async -> Response {
        switch (request.method, request.uri.path) {
        case (.get, "/metrics"):
            return HTTPSupport.bytes(200, Data(core.metrics.render().utf8), contentType: "text/plain; version=0.0.4")
        case (.get, "/healthz"):
            return HTTPSupport.bytes(200, Data("ok\n".utf8), contentType: "text/plain")
        case (.get, "/readyz"):
            return ready() ? HTTPSupport.bytes(200, Data("ready\n".utf8), contentType: "text/plain")
                           : HTTPSupport.bytes(503, Data("not ready: no connection to the coordinator\n".utf8), contentType: "text/plain")
        case (.post, "/v1/check"):
            if let refused = sidecar.authenticate(request) { return refused }
            return await sidecar.check(request)
        case (.post, "/v1/settle"):
            if let refused = sidecar.authenticate(request) { return refused }
            return await sidecar.settle(request)
        default:
            return HTTPSupport.error(GatewayError(404, type: "invalid_request_error", code: "not_found",
                                                  "no such endpoint; this listener serves /metrics, /healthz, /readyz, POST /v1/check and POST /v1/settle"))
        }
    }

    /// The metrics listener (`gateway.metrics`): `/metrics`, `/healthz`, `/readyz`, nothing else.
    func respondMetricsOnly(_ request: Request) async -> Response {
        switch (request.method, request.uri.path) {
        case (.get, "/metrics"), (.get, "/healthz"), (.get, "/readyz"):
            return await respond(request)
        default:
            return HTTPSupport.error(GatewayError(404, type: "invalid_request_error", code: "not_found",
                                                  "no such endpoint; this listener serves /metrics, /healthz and /readyz"))
        }
    }
}

/// Reservations made through `/v1/check`, held until `/v1/settle` names them (or their TTL
/// runs out: then they are settled at the full amount, like a cut stream).
final class Sidecar: Service, Sendable {
    let core: GatewayCore
    private let held = Mutex<[String: (admission: Admission, expires: Instant)]>([:])

    init(core: GatewayCore) { self.core = core }

    /// Nil when the request carries a token whose SHA-256 is in `gateway.sidecar_tokens_sha256`
    /// (compared in constant time); otherwise the refusal to send, counted by reason.
    func authenticate(_ request: Request) -> Response? {
        let hashes = core.fileConfig.sidecarTokenHashes
        guard !hashes.isEmpty else {
            core.metrics.sidecarRefused("disabled")
            return HTTPSupport.error(GatewayError(403, type: "permission_error", code: "sidecar_disabled",
                                                  "the sidecar API is off: list the SHA-256 of a token in gateway.sidecar_tokens_sha256"))
        }
        guard let token = HTTPSupport.header(request, Self.tokenHeader), !token.isEmpty else {
            core.metrics.sidecarRefused("missing_token")
            return HTTPSupport.error(GatewayError(401, type: "authentication_error", code: "sidecar_token_missing",
                                                  "send the sidecar token in the \(Self.tokenHeader) header"))
        }
        let digest = Array(SHA256.hash(data: Data(token.utf8)))
        var match = false
        for h in hashes {
            var diff: UInt8 = 0
            for (a, b) in zip(h, digest) { diff |= a ^ b }
            match = match || diff == 0
        }
        guard match else {
            core.metrics.sidecarRefused("wrong_token")
            return HTTPSupport.error(GatewayError(401, type: "authentication_error", code: "sidecar_token_invalid",
                                                  "the sidecar token is not one of gateway.sidecar_tokens_sha256"))
        }
        return nil
    }

    static let tokenHeader = "allot-sidecar-token"

    /// As a service: sweeps expired reservations every 5 s; on shutdown (after the listeners
    /// stopped, before the leases go back) settles every one still held.
    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(5)) }
            sweep()
        }
        sweep(everything: true)
    }

    /// `/v1/check` as nginx's `auth_request` calls it (header `Allot-Auth-Request: 1`): it
    /// passes a request on a 2xx and denies it on 401 or 403 only, so any other refusal
    /// (429, 503, 400) is answered 403 with the real status in `Allot-Status`.
    func check(_ request: Request) async -> Response {
        var r = await checking(request)
        guard HTTPSupport.header(request, "allot-auth-request") == "1", r.status.code >= 400, r.status.code != 401, r.status.code != 403 else { return r }
        r.headers[HTTPField.Name("allot-status")!] = "\(r.status.code)"
        r.status = .forbidden
        return r
    }

    private func checking(_ request: Request) async -> Response {
        let json: [String: Any]
        do { json = try await Self.object(request) } catch { return HTTPSupport.error(error) }
        sweep()
        let entry: ConsumerDirectory.Entry
        if let key = json["key"] as? String {
            do { entry = try core.authenticate(authorization: "Bearer \(key)") } catch { return HTTPSupport.error(error) }
        } else if let id = json["consumer"] as? String, let e = core.consumer(id: id) {
            entry = e
        } else {
            return HTTPSupport.error(GatewayError(401, type: "invalid_request_error", code: "unknown_consumer",
                                                  "name a known consumer (\"consumer\") or an API key (\"key\")"))
        }
        let plan: RequestPlan
        do { plan = try Self.plan(json, core: core, entry: entry) } catch {
            core.record(entry, plan: nil, decision: "reject", error: error)
            return HTTPSupport.error(error)
        }
        switch await core.admit(entry, plan: plan) {
        case .failure(let e):
            let h = core.headers(for: entry, plan: plan, error: e)
            var body: [String: Any] = ["allowed": false, "status": e.status, "code": e.code, "message": e.message]
            if let b = e.budget { body["budget"] = b }
            if let r = e.retryAfterSeconds { body["retry_after_s"] = r }
            return HTTPSupport.json(e.status, body, headers: h)
        case .success(let a):
            if json["settle"] as? Bool == true {
                // Admitted and settled at once at what it reserved (request budgets behind
                // auth_request: nothing to settle after the response).
                a.settle(.incomplete(status: nil))
                return HTTPSupport.json(200, ["allowed": true, "settled": true], headers: a.headers)
            }
            let id = "r-" + UUID().uuidString.lowercased()
            let ttl = core.fileConfig.sidecarReservationTTL
            held.withLock { $0[id] = (a, core.now() + ttl) }
            var body: [String: Any] = ["allowed": true, "reservation_id": id, "expires_in_s": ttl.components.seconds,
                                       "reserved": ["input_tokens": plan.inputBound, "output_tokens": plan.outputBound,
                                                    "micro_dollars": plan.costBound]]
            if let w = a.wouldDeny { body["would_deny"] = w } // shadow mode
            return HTTPSupport.json(200, body, headers: a.headers)
        }
    }

    func settle(_ request: Request) async -> Response {
        let json: [String: Any]
        do { json = try await Self.object(request) } catch { return HTTPSupport.error(error) }
        guard let id = json["reservation_id"] as? String else {
            return HTTPSupport.error(.badRequest("missing_reservation_id", "name the reservation_id that /v1/check returned"))
        }
        let outcome: GatewayCore.Outcome
        if json["refund"] as? Bool == true {
            outcome = .upstreamFailed(status: 0)
        } else {
            guard let i = Self.count(json["input_tokens"]), let o = Self.count(json["output_tokens"] ?? 0) else {
                return HTTPSupport.error(.badRequest("invalid_usage", "input_tokens and output_tokens must be non-negative integers (or send \"refund\": true)"))
            }
            outcome = .usage(Usage(input: i, output: o), status: 200)
        }
        guard let a = held.withLock({ $0.removeValue(forKey: id) })?.admission else {
            return HTTPSupport.error(GatewayError(404, type: "invalid_request_error", code: "unknown_reservation",
                                                  "reservation \(id) is unknown, already settled or expired"))
        }
        a.settle(outcome)
        return HTTPSupport.json(200, ["settled": true, "reservation_id": id])
    }

    /// Settles reservations whose TTL ran out (all of them with `everything`), at their full amount.
    func sweep(everything: Bool = false) {
        let now = everything ? .distantFuture : core.now()
        let expired = held.withLock { h -> [Admission] in
            let gone = h.filter { $0.value.expires <= now }
            for k in gone.keys { h.removeValue(forKey: k) }
            return gone.values.map(\.admission)
        }
        for a in expired { a.settle(.incomplete(status: nil)) }
    }

    static func object(_ request: Request) async throws(GatewayError) -> [String: Any] {
        let data = try await HTTPSupport.body(request, limit: 64 << 10)
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .badRequest("invalid_json", "the body must be a JSON object")
        }
        return o
    }

    static func count(_ v: Any?) -> Int64? {
        Usage.count(v) // checked: a huge, negative, fractional or boolean value is nil, never a trap
    }

    /// `{"route": "chat", "model": "...", "input_tokens": N, "output_tokens": M}`: the bound to reserve.
    static func plan(_ json: [String: Any], core: GatewayCore, entry: ConsumerDirectory.Entry) throws(GatewayError) -> RequestPlan {
        let routeName = json["route"] as? String ?? "chat"
        guard let route = Route(rawValue: routeName) else {
            throw .badRequest("unknown_route", "route must be one of \(Route.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(routeName)')")
        }
        try core.checkEntitlements(entry, route: route, chainDepth: (json["chain_depth"] as? NSNumber).map { "\($0)" })
        guard let input = count(json["input_tokens"] ?? 0), let output = count(json["output_tokens"] ?? 0) else {
            throw .badRequest("invalid_usage", "input_tokens and output_tokens must be non-negative integers")
        }
        var model: String?
        var micro: Int64 = 0
        if route.isModelRoute {
            guard let m = json["model"] as? String, let price = core.models[m] else {
                throw .badRequest("model_not_found", "name a configured model for the \(route.rawValue) route")
            }
            let e = core.entitlements(for: entry)
            if let allowed = e.models, !allowed.contains(m) {
                throw GatewayError(403, type: "permission_error", code: "model_not_entitled",
                                   "tier \(entry.consumer.tier) is not entitled to model '\(m)'", budget: "entitlement.models")
            }
            if let max = e.maxTokens, output > max {
                throw GatewayError(400, type: "invalid_request_error", code: "max_tokens_not_entitled",
                                   "output_tokens \(output) is above tier \(entry.consumer.tier)'s ceiling of \(max)", budget: "entitlement.max_tokens")
            }
            model = m
            micro = price.boundMicroDollars(input: input, output: output)
        }
        return RequestPlan(route: route, model: model, stream: false, inputBound: input, outputBound: output, costBound: micro, body: Data())
    }
}
