import AllotConfig
import AllotCoordinator
import AllotCore
import AllotDemo
import AllotGateway
import AllotTransport
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import Yams

/// The coordinator's admin API (issue 17): HTTPS with mutual TLS, admin certificates only,
/// JSON in and out, described by docs/admin-api.yaml.
@Suite("Coordinator admin API", .serialized)
struct AdminAPITests {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/admin-api.yaml")

    struct Answer {
        var status: Int
        var json: [String: Any]
        var body: String
    }

    static func https(_ client: HTTPClient, _ port: Int, _ method: HTTPMethod, _ path: String, _ body: String? = nil) async throws -> Answer {
        var r = HTTPClientRequest(url: "https://127.0.0.1:\(port)\(path)")
        r.method = method
        if let body {
            r.headers.add(name: "content-type", value: "application/json")
            r.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(r, timeout: .seconds(10))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        return Answer(status: Int(response.status.code), json: ((try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]) ?? [:], body: text)
    }

    @Test("real time: keys and consumers over HTTPS with an admin certificate; the gateway serves the new key; bad input is 400 naming the field; a node certificate is 403")
    func keysOverHTTPS() async throws {
        let (base, consumers) = try testConfig()
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent("allot-api-\(UUID().uuidString.prefix(8)).db").path
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 1, ledgerPath: ledger, adminAPI: true)
        let certs = fleet.directory.appendingPathComponent("certs")
        _ = try CertificateAuthority.open(certs).issue(role: .admin, name: "ops")
        var port: Int?
        for _ in 0..<200 where port == nil {
            port = fleet.coordinatorService.adminAPIPort
            if port == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        let api = try #require(port)
        let admin = HTTPClient(eventLoopGroupProvider: .singleton,
                               configuration: .init(tlsConfiguration: try TLSMaterial.load(dir: certs, role: .admin, name: "ops").clientConfiguration))
        let node = HTTPClient(eventLoopGroupProvider: .singleton,
                              configuration: .init(tlsConfiguration: try TLSMaterial.load(dir: certs, role: .node, name: "gw-1").clientConfiguration))

        let created = try await Self.https(admin, api, .POST, "/v1/keys", #"{"consumer": "dora", "tier": "pro", "expires_in": "30d"}"#)
        #expect(created.status == 201, "\(created.body)")
        let key = try #require(created.json["key"] as? String)
        #expect(key.hasPrefix("sk-allot-") && created.json["key_id"] as? String == String(Directory.sha256(key).prefix(12)))
        #expect(created.json["version"] as? Int == 1)
        // The gateway serves it (pushed at once).
        var status = 0
        for _ in 0..<50 where status != 200 {
            status = try await call(port: fleet.proxyPorts[0], key: key, body: chatBody(maxTokens: 20)).status
            if status != 200 { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(status == 200)
        let directory = try await Self.https(admin, api, .GET, "/v1/directory")
        #expect(directory.status == 200 && directory.json["version"] as? Int == 1 && !directory.body.contains(key), "ids and hashes, never the key")
        #expect((directory.json["keys"] as? [[String: Any]])?.first?["consumer"] as? String == "dora")
        let moved = try await Self.https(admin, api, .PUT, "/v1/consumers/dora", #"{"tier": "agent", "team": "ops"}"#)
        #expect(moved.status == 200 && (moved.json["summary"] as? String)?.contains("tier pro -> tier agent") == true, "\(moved.body)")

        // Bad input: 400, the field named, nothing changed.
        for (method, path, body, says) in [
            (HTTPMethod.POST, "/v1/keys", #"{"consumer": "dora", "color": "red"}"#, "color: unknown field"),
            (.POST, "/v1/keys", #"{"consumer": 7}"#, "consumer"),
            (.POST, "/v1/keys", "not json", "JSON object"),
            (.POST, "/v1/keys", #"{"consumer": "eve"}"#, "not in the directory"),
            (.POST, "/v1/keys", #"{"consumer": "dora", "expires_in": "soon"}"#, "expires_in"),
            (.PUT, "/v1/consumers/dora", #"{"tier": "gold"}"#, "tier 'gold' is not configured"),
            (.PUT, "/v1/consumers/dora", #"{"tier": "pro", "max_chain_depth": true}"#, "max_chain_depth"),
            (.DELETE, "/v1/keys/000000000000", nil, "no key with id"),
        ] as [(HTTPMethod, String, String?, String)] {
            let r = try await Self.https(admin, api, method, path, body)
            #expect(r.status == 400 && ((r.json["error"] as? [String: Any])?["message"] as? String)?.contains(says) == true, "\(method) \(path): \(r.body)")
        }
        let history = try await Self.https(admin, api, .GET, "/v1/directory/history?last=10")
        let versions = history.json["versions"] as? [[String: Any]] ?? []
        #expect(versions.count == 2 && versions.allSatisfy { $0["author"] as? String == "ops" }, "\(history.body)")
        #expect(try await Self.https(admin, api, .GET, "/v1/nothing").status == 404)
        #expect(try await Self.https(admin, api, .GET, "/v1/directory/history?last=0").status == 400)
        // 0 and 1 are numbers (JSONSerialization also reads them as booleans).
        for depth in [0, 1] {
            let r = try await Self.https(admin, api, .PUT, "/v1/consumers/dora", #"{"tier": "agent", "max_chain_depth": \#(depth)}"#)
            #expect(r.status == 200, "max_chain_depth \(depth): \(r.body)")
        }
        // Every route the OpenAPI file describes is served (answered, if only with a 400).
        let doc = try #require(try Yams.load(yaml: String(contentsOf: Self.docs, encoding: .utf8)) as? [String: Any])
        for (path, item) in try #require(doc["paths"] as? [String: Any]) {
            for method in (item as? [String: Any] ?? [:]).keys {
                let concrete = path.replacingOccurrences(of: "{key_id}", with: "000000000000").replacingOccurrences(of: "{id}", with: "nobody")
                let r = try await Self.https(admin, api, HTTPMethod(rawValue: method.uppercased()), concrete, method == "get" ? nil : "{}")
                #expect(r.status != 404 && r.status < 500, "\(method) \(path): \(r.status) \(r.body)")
            }
        }

        // A node certificate: refused, nothing changed.
        let refused = try await Self.https(node, api, .POST, "/v1/keys", #"{"consumer": "dora"}"#)
        #expect(refused.status == 403)
        let revoked = try await Self.https(admin, api, .DELETE, "/v1/keys/\(created.json["key_id"] as? String ?? "")")
        #expect(revoked.status == 200 && revoked.json["version"] as? Int == 5, "two depth changes, then this: \(revoked.body)")
        try await admin.shutdown()
        try await node.shutdown()
        await fleet.stop(remove: true)
        try? FileManager.default.removeItem(atPath: ledger)
    }

    @Test("docs/admin-api.yaml describes exactly the routes the API serves")
    func openAPIMatches() throws {
        let doc = try #require(try Yams.load(yaml: String(contentsOf: Self.docs, encoding: .utf8)) as? [String: Any])
        #expect((doc["openapi"] as? String)?.hasPrefix("3.") == true)
        let paths = try #require(doc["paths"] as? [String: Any])
        var described = Set<String>()
        for (path, item) in paths {
            for method in (item as? [String: Any] ?? [:]).keys where ["get", "put", "post", "delete", "patch"].contains(method) {
                described.insert("\(method.uppercased()) \(path)")
            }
        }
        #expect(described == Set(AdminAPI.routes))
        // Every $ref resolves.
        let text = try String(contentsOf: Self.docs, encoding: .utf8)
        let components = try #require(doc["components"] as? [String: [String: Any]])
        for ref in text.components(separatedBy: "$ref: \"#/components/").dropFirst() {
            let parts = ref.prefix { $0 != "\"" }.split(separator: "/").map(String.init)
            #expect(parts.count == 2 && components[parts[0]]?[parts[1]] != nil, "unresolved $ref \(parts)")
        }
    }
}
