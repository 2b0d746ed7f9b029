import AllotConfig
import AllotCore
import AllotDemo
@testable import AllotGateway
import AllotTransport
import Foundation
import Logging
import NIOPosix
import Testing

/// Keys and consumers at run time (issue 17, must-shows 2 and 3): `allot keys` against a
/// coordinator with a ledger, three gateways, the directory cached on disk.
@Suite("Consumer directory: keys at run time", .serialized)
struct DirectoryTests {
    /// Sends a chat request with `key` to each port until each answers other than 401 (or
    /// until each answers 401 when `refused`); the time until the last one did, or nil after 5 s.
    static func until(_ ports: [Int], key: String, refused: Bool) async throws -> Duration? {
        let start = ContinuousClock.now
        var pending = Set(ports)
        while !pending.isEmpty {
            for p in pending.sorted() {
                let r = try await call(port: p, key: key, body: chatBody(maxTokens: 20))
                if (r.status == 401) == refused { pending.remove(p) }
            }
            if ContinuousClock.now - start > .seconds(5) { return nil }
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
        }
        return ContinuousClock.now - start
    }

    static func allot(_ args: [String], _ fleet: LocalFleet) throws -> String {
        let certs = fleet.directory.appendingPathComponent("certs").path
        let run = try runAllot(args + ["--coordinator", "127.0.0.1:\(fleet.coordinatorPort)", "--tls-dir", certs])
        #expect(run.status == 0, "allot \(args.joined(separator: " ")): \(run.output)")
        return run.output
    }

    @Test("real time, 3 gateways: allot keys create, then a request on each gateway is served within 1 s; revoke: 401 on all three within 1 s; history names the author; a restart with no coordinator still knows the keys")
    func keysAtRunTime() async throws {
        let (base, consumers) = try testConfig { $0.directoryCache = "set per gateway" }
        let ledger = FileManager.default.temporaryDirectory.appendingPathComponent("allot-dir-\(UUID().uuidString.prefix(8)).db").path
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 3, ledgerPath: ledger)
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .admin, name: "ops")

        // A key nobody has yet: refused everywhere.
        let created = try Self.allot(["keys", "create", "--consumer", "newbie", "--tier", "pro", "--expires", "30d"], fleet)
        let key = try #require(created.split(separator: "\n").map(String.init).first { $0.hasPrefix("sk-allot-") })
        let served = try await Self.until(fleet.proxyPorts, key: key, refused: false)
        #expect(served != nil && served! < .seconds(1), "served on all three after \(String(describing: served))")
        let ok = try await call(port: fleet.proxyPorts[2], key: key, body: chatBody(maxTokens: 20))
        #expect(ok.status == 200, "\(ok.status) \(ok.body)")
        // The file's consumers still work beside the directory's.
        #expect(try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: chatBody(maxTokens: 20)).status == 200)

        let list = try Self.allot(["keys", "list"], fleet)
        let keyID = String(ConsumerDirectory.hash(key).prefix(12))
        #expect(list.contains(keyID) && list.contains("newbie") && !list.contains(key), "ids, never keys: \(list)")

        // A second key for the same consumer, kept through the revocation of the first.
        let second = try #require(try Self.allot(["keys", "create", "--consumer", "newbie"], fleet)
            .split(separator: "\n").map(String.init).first { $0.hasPrefix("sk-allot-") })
        _ = try Self.allot(["keys", "revoke", keyID], fleet)
        let refused = try await Self.until(fleet.proxyPorts, key: key, refused: true)
        #expect(refused != nil && refused! < .seconds(1), "refused on all three after \(String(describing: refused))")
        print("DirectoryTests: a new key served on 3 gateways after \(served.map { "\($0)" } ?? "-"), a revoked one refused on 3 after \(refused.map { "\($0)" } ?? "-")")
        #expect(try await Self.until(fleet.proxyPorts, key: second, refused: false) != nil)

        // Bad changes change nothing and say why.
        let certs = fleet.directory.appendingPathComponent("certs").path
        for (args, reason) in [(["keys", "revoke", keyID], "no key with id"), (["keys", "create", "--consumer", "ghost"], "not in the directory"),
                               (["consumers", "set", "--id", "x", "--tier", "gold"], "tier 'gold' is not configured"),
                               (["keys", "create", "--consumer", "newbie", "--expires", "-1d"], "expires")] {
            let r = try runAllot(args + ["--coordinator", "127.0.0.1:\(fleet.coordinatorPort)", "--tls-dir", certs])
            #expect(r.status != 0 && r.output.contains(reason), "allot \(args.joined(separator: " ")): \(r.output)")
        }
        let history = try Self.allot(["keys", "history"], fleet)
        let lines = history.split(separator: "\n")
        #expect(lines.count == 3, "three versions: \(history)")
        #expect(lines.first?.contains("ops") == true && lines.first?.contains("keys revoke \(keyID) of newbie") == true)
        #expect(lines.last?.hasPrefix("1 ") == true && lines.last?.contains("keys create \(keyID) for newbie") == true)

        // Restart gw-1 with no coordinator reachable: its cache still authenticates.
        await fleet.stop()
        let (restarted, port, task) = try await restartGateway1(base, consumers: consumers, beside: fleet)
        #expect(restarted.core.directoryVersion == 3)
        let known = try await call(port: port, key: second, body: chatBody(maxTokens: 20))
        #expect(known.status != 401, "authenticated from the cache (\(known.status): \(known.body))")
        #expect(try await call(port: port, key: key, body: chatBody(maxTokens: 20)).status == 401, "the revoked key stays refused")
        task.cancel()
        _ = await task.result
        try? FileManager.default.removeItem(atPath: ledger)
    }

    @Test("a gateway applies only newer versions (two coordinators' pushes may race), refuses expired keys, keeps file keys beside the directory's, and caches only the newest")
    func gatewaySide() throws {
        let (config, consumers) = try testConfig()
        let core = try GatewayCore(config: config, consumers: consumers, enforcer: try SharedEnforcer(settings: EnforcerSettings(node: "gw")), audit: nil)
        let now = WallClock.now()
        var v1 = Directory()
        let (k1, h1) = Directory.newKey(), (k2, h2) = Directory.newKey(), (k3, h3) = Directory.newKey()
        _ = try v1.apply(.createKey(.init(consumer: "carol", keySHA256: h1, created: now, expires: nil), tier: "pro"), tiers: ["pro", "agent"])
        _ = try v1.apply(.createKey(.init(consumer: "carol", keySHA256: h2, created: now - .seconds(10), expires: now - .seconds(1)), tier: nil), tiers: ["pro"])
        _ = try v1.apply(.createKey(.init(consumer: "bot", keySHA256: h3, created: now, expires: nil), tier: "gold"), tiers: ["gold"])
        #expect(core.apply(directory: v1, version: 5))
        #expect((try? core.authenticate(authorization: "Bearer \(k1)"))?.consumer.id == "carol")
        #expect(throws: GatewayError.self, "expired") { try core.authenticate(authorization: "Bearer \(k2)") }
        #expect(throws: GatewayError.self, "a tier this gateway does not know") { try core.authenticate(authorization: "Bearer \(k3)") }
        #expect((try? core.authenticate(authorization: "Bearer sk-pro-1"))?.consumer.id == "p1", "the file's keys stay")
        // An older version arriving late changes nothing; the same version neither.
        var v0 = v1
        _ = try v0.apply(.revokeKey(keyID: String(h1.prefix(12))), tiers: ["pro"])
        #expect(!core.apply(directory: v0, version: 4) && !core.apply(directory: v0, version: 5))
        #expect((try? core.authenticate(authorization: "Bearer \(k1)")) != nil && core.directoryVersion == 5)
        // The cache: written, newest only; a reload of the file keeps the directory.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("allot-dircache-\(UUID().uuidString.prefix(8)).json").path
        try core.saveDirectory(to: path)
        #expect(core.apply(directory: v0, version: 6))
        try core.saveDirectory(to: path)
        let cached = try #require(try GatewayCore.loadDirectory(from: path))
        #expect(cached.version == 6 && cached.directory == v0, "kept whole, the unknown tier's consumer too")
        core.reload(consumers: consumers)
        #expect(throws: GatewayError.self, "revoked in version 6") { try core.authenticate(authorization: "Bearer \(k1)") }
        try Data("{not json".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: AllotError.self) { try GatewayCore.loadDirectory(from: path) }
        try? FileManager.default.removeItem(atPath: path)
    }

    @Test("Directory.apply: each change checked (ids, tiers, hashes, expiry, duplicates, size); a refused change leaves the directory as it was")
    func changes() throws {
        var d = Directory()
        let tiers: Set<String> = ["pro", "free"]
        let now = Instant(nanoseconds: 1_800_000_000_000_000_000)
        let hash = ConsumerDirectory.hash("k1")
        #expect(throws: AllotError.self) { try d.apply(.createKey(.init(consumer: "a", keySHA256: hash, created: now, expires: nil), tier: nil), tiers: tiers) }
        _ = try d.apply(.createKey(.init(consumer: "a", keySHA256: hash, created: now, expires: nil), tier: "pro"), tiers: tiers)
        let before = d
        for change: Directory.Change in [
            .createKey(.init(consumer: "a", keySHA256: hash, created: now, expires: nil), tier: nil),               // the same key twice
            .createKey(.init(consumer: "a", keySHA256: String(repeating: "G", count: 64), created: now, expires: nil), tier: nil),
            .createKey(.init(consumer: "a", keySHA256: ConsumerDirectory.hash("k2"), created: now, expires: now), tier: nil),
            .createKey(.init(consumer: "a", keySHA256: ConsumerDirectory.hash("k3"), created: now, expires: nil), tier: "gold"),
            .setConsumer(.init(id: "has space", tier: "pro")), .setConsumer(.init(id: "a/b", tier: "pro")),
            .setConsumer(.init(id: "b", tier: "pro", maxChainDepth: -1)), .setConsumer(.init(id: String(repeating: "x", count: 129), tier: "pro")),
            .deleteConsumer(id: "nobody"), .revokeKey(keyID: "000000000000"),
        ] {
            #expect(throws: AllotError.self, "\(change)") { try d.apply(change, tiers: tiers) }
            #expect(d == before)
        }
        // A directory too large for one frame is refused.
        #expect(throws: AllotError.self) { try d.apply(.setConsumer(.init(id: "b", tier: "pro")), tiers: tiers, maxBytes: 200) }
        #expect(d == before)
        let deleted = try d.apply(.deleteConsumer(id: "a"), tiers: tiers)
        #expect(d.keys.isEmpty && d.consumers.isEmpty && deleted.contains(String(hash.prefix(12))))
        // The wire form round-trips, and an unreadable one is refused.
        #expect(try Directory(decoding: before.encoded()) == before)
        #expect(throws: AllotError.self) { try Directory(decoding: Data("{\"consumers\": 1}".utf8)) }
        #expect(throws: AllotError.self) { try Directory.decode(change: "{}") }
    }
}
