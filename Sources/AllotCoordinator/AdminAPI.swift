import AllotConfig
import AllotCore
import AllotTransport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// The coordinator's admin API (`coordinator.admin_api`, off by default): HTTPS with mutual
/// TLS, admin certificates only, JSON in and out. The consumer directory's operations, as
/// `allot keys` and `allot consumers` do them (docs/admin-api.yaml describes them):
///
/// - `GET /v1/directory`, `GET /v1/directory/history?last=N`
/// - `POST /v1/keys` `{"consumer", "tier"?, "expires_in"?}` → 201 with the key, shown once
/// - `DELETE /v1/keys/{key_id}`
/// - `PUT /v1/consumers/{id}` `{"tier", "team"?, "tenant"?, "max_chain_depth"?}`, `DELETE /v1/consumers/{id}`
///
/// The author of a change is the certificate's name. The TLS files are read when it starts.
public struct AdminAPI: Sendable {
    let core: CoordinatorCore
    let tls: TLSMaterialStore
    let logger: Logger

    public init(core: CoordinatorCore, tls: TLSMaterialStore, logger: Logger) {
        self.core = core
        self.tls = tls
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        self.logger = quiet
    }

    /// A request and the channel it came on (for the peer's certificate).
    public struct Context: RequestContext {
        public var coreContext: CoreRequestContextStorage
        let channel: any Channel
        public init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
            channel = source.channel
        }
    }

    /// The listener as a `Service`; `onBound` gets the bound port (0 picks one).
    public func service(host: String, port: Int, onBound: @escaping @Sendable (Int) -> Void) throws -> some Service {
        let api = self
        return Application(
            responder: LibraryMetrics.counted(route: { Self.route($0.uri.path) }) { request, context in await api.respond(request, context) },
            // A connection idle for 30 s is closed, a TLS handshake that never ends too (no
            // request reaches the HTTP layer meanwhile).
            server: try .tls(.http1(configuration: .init(idleTimeout: .seconds(30))), tlsConfiguration: tls.current.serverConfiguration),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in onBound(channel.localAddress?.port ?? 0) }, logger: logger)
    }

    /// The routes this API serves, as `METHOD /path` (docs/admin-api.yaml must list exactly these).
    public static let routes = ["GET /v1/directory", "GET /v1/directory/history", "POST /v1/keys", "DELETE /v1/keys/{key_id}",
                                "PUT /v1/consumers/{id}", "DELETE /v1/consumers/{id}"]

    /// The route template a path falls under (an `http_route` label), or `other`.
    static func route(_ path: String) -> String {
        let seg = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        switch Array(seg) {
        case ["v1", "directory"], ["v1", "directory", "history"], ["v1", "keys"]: return path
        case let s where s.count == 3 && s[0] == "v1" && s[1] == "keys": return "/v1/keys/{key_id}"
        case let s where s.count == 3 && s[0] == "v1" && s[1] == "consumers": return "/v1/consumers/{id}"
        default: return "other"
        }
    }

    func respond(_ request: Request, _ context: Context) async -> Response {
        let author: String
        do {
            let cert = try await context.channel.nioSSL_peerCertificate().get()
            let material = tls.current
            let peer = try PeerVerifier.inspect(cert, trustDomain: material.identity.trustDomain, roles: [.admin], denyList: material.denyList)
            // Checked on every request: a kept-alive connection outlives no certificate.
            guard peer.notValidAfter > Date() else { throw AllotError(.invalidSettings, "the certificate has expired") }
            author = peer.identity.name
        } catch {
            core.count(rejected: "admin_api_forbidden")
            return Self.error(403, "forbidden", "the admin API takes admin certificates only: \(error)")
        }
        let parts = request.uri.path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let seg = parts.first == "" ? Array(parts.dropFirst()) : []
        /// The last segment of `/v1/<kind>/<id>`, when the path has that shape.
        func id(under kind: String) -> String? {
            seg.count == 3 && seg[0] == "v1" && seg[1] == kind && !seg[2].isEmpty ? seg[2] : nil
        }
        do {
            switch request.method {
            case .get where seg == ["v1", "directory"]:
                return Self.json(200, try directoryObject())
            case .get where seg == ["v1", "directory", "history"]:
                let raw = request.uri.queryParameters.get("last")
                guard let last = raw.map({ Int($0) }) ?? 20 else { throw AllotError(.invalidSettings, "last: a whole number from 1 to 1000 is required") }
                guard let store = core.directory.store else { throw Self.noLedger }
                guard (1...1_000).contains(last) else { throw AllotError(.invalidSettings, "last: a whole number from 1 to 1000 is required") }
                let rows = try await store.directoryHistory(limit: last)
                return Self.json(200, ["versions": rows.map { ["version": $0.version, "author": $0.author, "created_unix_ns": $0.created.nanoseconds, "change": $0.change] }])
            case .post where seg == ["v1", "keys"]:
                let body = try await Self.object(request, allowed: ["consumer", "tier", "expires_in"])
                guard let consumer = body["consumer"] as? String else { throw AllotError(.invalidSettings, "consumer: a string is required") }
                let tier = try Self.string(body, "tier")
                let now = WallClock.now()
                let expires = try Self.string(body, "expires_in").map { now + (try ConfigFields.duration($0, field: "expires_in")) }
                let (key, hash) = Directory.newKey()
                let record = Directory.KeyRecord(consumer: consumer, keySHA256: hash, created: now, expires: expires)
                let (version, summary) = try await apply(.createKey(record, tier: tier), author: author)
                return Self.json(201, ["key": key, "key_id": record.key_id, "consumer": consumer, "version": version, "summary": summary])
            case .delete where id(under: "keys") != nil:
                let (version, summary) = try await apply(.revokeKey(keyID: id(under: "keys")!), author: author)
                return Self.json(200, ["version": version, "summary": summary])
            case .put where id(under: "consumers") != nil:
                let body = try await Self.object(request, allowed: ["tier", "team", "tenant", "max_chain_depth"])
                guard let tier = body["tier"] as? String else { throw AllotError(.invalidSettings, "tier: a string is required") }
                var depth: Int?
                if let d = body["max_chain_depth"], !(d is NSNull) {
                    // Typed by a decoder: JSONSerialization's numbers 0 and 1 also read as booleans.
                    struct Depth: Decodable { var max_chain_depth: Int }
                    let data = try JSONSerialization.data(withJSONObject: ["max_chain_depth": d])
                    guard let v = try? JSONDecoder().decode(Depth.self, from: data).max_chain_depth else {
                        throw AllotError(.invalidSettings, "max_chain_depth: a whole number is required")
                    }
                    depth = v
                }
                let record = Directory.ConsumerRecord(id: id(under: "consumers")!, tier: tier, team: try Self.string(body, "team"),
                                                      tenant: try Self.string(body, "tenant"), maxChainDepth: depth)
                let (version, summary) = try await apply(.setConsumer(record), author: author)
                return Self.json(200, ["version": version, "summary": summary])
            case .delete where id(under: "consumers") != nil:
                let (version, summary) = try await apply(.deleteConsumer(id: id(under: "consumers")!), author: author)
                return Self.json(200, ["version": version, "summary": summary])
            default:
                core.count(rejected: "admin_api_not_found")
                return Self.error(404, "not_found", "no such endpoint: \(request.method) \(request.uri.path) (\(Self.routes.joined(separator: ", ")))")
            }
        } catch let e as AllotError {
            core.count(rejected: "admin_api_invalid")
            if e.message == Self.noLedger.message { return Self.error(503, "no_ledger", e.message) }
            if e.message == VersionedDocument.directory.contended.message { return Self.error(409, "conflict", e.message) }
            return Self.error(400, "invalid_request", e.message)
        } catch {
            core.count(rejected: "admin_api_failed")
            return Self.error(503, "ledger_unavailable", "\(error)")
        }
    }

    func apply(_ change: Directory.Change, author: String) async throws -> (Int64, String) {
        guard core.directory.store != nil else { throw Self.noLedger }
        return try await core.directory.apply(change, author: author, nodes: { [core] in core.nodeSinks })
    }

    func directoryObject() throws -> Any {
        let d = core.directory.directory
        var o = (try JSONSerialization.jsonObject(with: d.encoded()) as? [String: Any]) ?? [:]
        o["version"] = core.directory.version
        return o
    }

    static let noLedger = AllotError(.invalidSettings, "this coordinator has no ledger: the consumer directory lives in the ledger (--ledger sqlite:PATH or postgres://...)")

    /// The request's JSON object (at most 64 KiB), with only `allowed` keys.
    static func object(_ request: Request, allowed: Set<String>) async throws -> [String: Any] {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: 65_536) } catch {
            throw AllotError(.invalidSettings, "the body must be a JSON object of at most 64 KiB")
        }
        guard let o = (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any] else {
            throw AllotError(.invalidSettings, "the body must be a JSON object")
        }
        for k in o.keys.sorted() where !allowed.contains(k) {
            throw AllotError(.invalidSettings, "\(k): unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
        return o
    }

    static func string(_ o: [String: Any], _ k: String) throws(AllotError) -> String? {
        guard let v = o[k], !(v is NSNull) else { return nil }
        guard let s = v as? String else { throw AllotError(.invalidSettings, "\(k): a string is required") }
        return s
    }

    static func json(_ status: Int, _ object: Any) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Response(status: .init(code: status), headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: Int, _ code: String, _ message: String) -> Response {
        json(status, ["error": ["code": code, "message": message]])
    }
}
