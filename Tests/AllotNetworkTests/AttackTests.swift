import AllotCluster
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import FoundationNetworking
import NIOCore
import NIOPosix
import Testing

/// Issue 15, must-show 1 (real time, real processes): each attack an authenticated peer or
/// a local process could make, run against `allot coordinator` and `allot gateway` as
/// separate processes. After each one the target is still running and serves a fresh,
/// legitimate node (or request) within 1 s.
@Suite("Attacks on real processes", .serialized)
struct AttackTests {
    final class Rig: @unchecked Sendable { // only touched from the test's task
        let pki: TestPKI
        let coordinator: ProcessTests.Proc
        let port: Int
        let admin: Int
        var gateway: ProcessTests.Proc?
        var proxy = 0, gatewayAdmin = 0
        var fresh = 100

        init(pki: TestPKI, coordinator: ProcessTests.Proc, port: Int, admin: Int) {
            self.pki = pki
            self.coordinator = coordinator
            self.port = port
            self.admin = admin
        }

        func stop() {
            gateway?.process.terminate()
            coordinator.process.terminate()
            coordinator.process.waitUntilExit()
            gateway?.process.waitUntilExit()
            pki.remove()
        }
    }

    static let yaml = """
    coordinator: {name: c1, listen: 127.0.0.1:0, admin: 127.0.0.1:0}
    lease: {ttl: 5s, refresh_interval: 1s}
    limits: {handshake_timeout: 1s, hello_timeout: 1s, idle_timeout: 3s, max_connections: 64, max_connections_per_identity: 4,
             max_refused_frames: 5, max_frame_bytes: 600000, tier_budgets_per_node: 16000}
    budgets:
      - {id: other, unit: requests, kind: rate, limit: 1000000, burst: 1000000}
      - {id: q, unit: requests, kind: quota, allowance: 1000000, window: day}
      - {id: fresh, unit: requests, kind: quota, allowance: 1000000000000, window: day}
    tiers:
      - name: pro
        templates:
          - {name: rpm, scope: [consumer], unit: requests, kind: rate, limit: 600, period: 1m}
    gateway:
      name: gw-gateway
      listen: 127.0.0.1:0
      admin: 127.0.0.1:0
      consumers: consumers.yaml
      audit_dir: ""
      client_header_timeout: 1s
      client_body_timeout: 1s
      client_idle_timeout: 2s
      sidecar_tokens_sha256: [78e7fc8665f29af180d8ac764f6f37a6749840d9bee6998b868fef1e1e3349bb]
    models:
      - {name: small, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6, max_output_tokens: 2048}
    """

    func start() async throws -> Rig {
        let pki = try TestPKI(nodes: 0)
        for name in ["c9"] { try pki.ca.issue(role: .coordinator, name: name) }
        for i in 0..<120 { try pki.ca.issue(role: .node, name: "gw-\(i)") }
        try pki.ca.issue(role: .node, name: "gw-gateway")
        try (Self.yaml + "\ntls: {dir: \(pki.dir.path)}\n").write(to: pki.dir.appendingPathComponent("allot.yaml"), atomically: true, encoding: .utf8)
        let hash = try ProcessTests().run(["hash-key", "sk-alice"], in: pki.dir).trimmingCharacters(in: .whitespacesAndNewlines)
        try "consumers:\n  - {id: alice, tier: pro, key_sha256: \(hash)}\n"
            .write(to: pki.dir.appendingPathComponent("consumers.yaml"), atomically: true, encoding: .utf8)
        let p = try ProcessTests().start(["coordinator", "--config", "allot.yaml"], in: pki.dir)
        var port = 0, admin = 0
        for _ in 0..<200 where port == 0 {
            try await Task.sleep(for: .milliseconds(50))
            let text = p.readAll()
            if let r = text.range(of: #"listening on 127\.0\.0\.1:(\d+), admin http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                let parts = text[r].split(separator: ":")
                port = Int(parts[1].split(separator: ",")[0]) ?? 0
                admin = Int(parts.last!) ?? 0
            }
        }
        try #require(port > 0 && admin > 0, "the coordinator did not start: \(p.text)")
        return Rig(pki: pki, coordinator: p, port: port, admin: admin)
    }

    /// A node with a certificate it has never used connects and is granted within 1 s.
    func freshNodeServed(_ rig: Rig, after attack: String) async throws {
        #expect(rig.coordinator.process.isRunning, "the coordinator died after: \(attack)")
        guard rig.coordinator.process.isRunning else { return }
        rig.fresh += 1
        let name = "gw-\(rig.fresh % 120)"
        let start = ContinuousClock.now
        let node = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: name))
        try await node.send([.hello(name: name), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "fresh", want: 5, demandRate: 5)])])
        await node.wait(.seconds(1)) { node.frames().contains { $0.kind == "grants" } }
        let granted = node.frames().contains { f in
            if case .grants(let g) = f.body { return g.items.first?.amount ?? 0 > 0 } else { return false }
        }
        #expect(granted, "a fresh node was not served within 1 s after: \(attack): \(node.frames().map(\.kind)) \(node.errors()) \(node.inbox.error.withLock { $0 } ?? "")")
        #expect(ContinuousClock.now - start < .seconds(1), "after: \(attack)")
        node.close()
    }

    /// The admin listener's metrics (with 16,000 budgets a debug build takes a while to render them).
    func metrics(_ port: Int) async throws -> String {
        var r = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        r.timeoutInterval = 60
        let (data, _) = try await URLSession.shared.data(for: r)
        return String(decoding: data, as: UTF8.self)
    }

    func node(_ rig: Rig, _ i: Int) async throws -> RawClient {
        let c = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: "gw-\(i)"))
        try await c.send([.hello(name: "gw-\(i)")])
        await c.wait { c.frames().contains { $0.kind == "hello_ack" } }
        return c
    }

    static func grants(_ c: RawClient) -> [Allot_V1_Grant] {
        c.frames().flatMap { f -> [Allot_V1_Grant] in if case .grants(let g) = f.body { return g.items } else { return [] } }
    }

    @Test("a coordinator process survives every attack from a node, an admin or a coordinator certificate")
    func coordinatorAttacks() async throws {
        let rig = try await start()
        defer { rig.stop() }
        try await freshNodeServed(rig, after: "start")

        // 1. Releases and acquires with counts at the edges of Int64, on the node's own lease.
        for v: Int64 in [.max, .min, -1, Checked.maxUnits + 1] {
            let n = try await node(rig, 1)
            try await n.send([.acquire([AcquireRequest(requestID: 1, node: "x", budget: "q", want: 10)])])
            await n.wait { !Self.grants(n).isEmpty }
            let lease = try #require(Self.grants(n).first?.leaseID)
            try await n.send([.release([ReleaseRequest(node: "x", budget: "q", leaseID: lease, consumed: v, released: v, final: false)]),
                              .acquire([AcquireRequest(requestID: 2, node: "x", budget: "q", want: v, demandRate: v, leaseID: lease,
                                                       consumed: v, released: v, holding: v, available: v, rateInUse: v, capacityInUse: v)])])
            await n.wait { n.errors().count >= 2 }
            #expect(n.errors().allSatisfy { $0.code == .protocolViolation && $0.message.contains("= \(v)") }, "\(n.errors())")
            n.close()
            try await freshNodeServed(rig, after: "counts of \(v)")
        }

        // 2. Gossip from a coordinator certificate: an incarnation of UInt64.max.
        let rogue = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .coordinator, name: "c9"))
        var g = Allot_V1_Gossip()
        g.from = MemberID(name: "c9", address: "127.0.0.1:1").wire
        g.to = MemberID(name: "c1", address: "127.0.0.1:\(rig.port)").wire
        g.kind = .ping
        g.sequence = 1
        var u = Allot_V1_MemberUpdate()
        u.member = g.to
        u.incarnation = .max
        u.state = .suspect
        g.updates = [u]
        var gf = Allot_V1_Frame()
        gf.gossip = g
        try await rogue.send([.hello(name: "c9"), gf])
        await rogue.wait { !rogue.errors().isEmpty }
        #expect(rogue.errors().first?.code == .protocolViolation)
        rogue.close()
        try await freshNodeServed(rig, after: "gossip with incarnation UInt64.max")

        // 3. 1,024 budget ids of 1 KB: refused by name; of 500 bytes: answered in frames under the limit.
        let big = try await node(rig, 2)
        try await big.send([.acquire((0..<500).map { AcquireRequest(requestID: UInt64($0 + 1), node: "x", budget: BudgetID(String(repeating: "k", count: 1000) + "\($0)"), want: 1) })])
        await big.wait { !big.errors().isEmpty }
        #expect(big.errors().first?.message.contains("budget id of") == true, "\(big.errors())")
        try await big.send([.acquire((0..<1024).map { AcquireRequest(requestID: UInt64($0 + 1), node: "x", budget: BudgetID(String(repeating: "k", count: 480) + "\($0)"), want: 1) })])
        await big.wait(.seconds(5)) { Self.grants(big).count >= 1024 }
        #expect(Self.grants(big).count == 1024 && Self.grants(big).allSatisfy { $0.outcome == .unknownBudget })
        #expect(big.frames().filter { $0.kind == "grants" }.count >= 2, "split across frames")
        #expect(!big.isClosed)
        big.close()
        try await freshNodeServed(rig, after: "1,024 long budget ids")

        // 4. 15,000 tier budgets, then `allot status` (paginated), then a node past its cap.
        let maker = try await node(rig, 3)
        for page in 0..<17 {
            try await maker.send([.acquire((0..<1000).map { i in
                AcquireRequest(requestID: UInt64(page * 1000 + i + 1), node: "x", budget: BudgetID("pro.rpm/consumer=u\(page * 1000 + i)"), want: 1)
            })])
            try await Task.sleep(for: .milliseconds(60))
        }
        await maker.wait(.seconds(10)) { Self.grants(maker).count >= 17_000 }
        let made = Self.grants(maker).filter { $0.outcome == .granted }.count
        #expect(made == 16_000, "the per-node cap of 16,000 holds (made \(made))")
        maker.close()
        let status = try ProcessTests().run(["status", "--coordinator", "127.0.0.1:\(rig.port)", "--tls-dir", rig.pki.dir.path, "--json"], in: rig.pki.dir)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any])
        #expect((json["budgets"] as? [Any])?.count ?? 0 >= 16_002, "every page of the status")
        try await freshNodeServed(rig, after: "16,000 tier budgets and a paginated status")
        let newcomer = try await node(rig, 4)
        try await newcomer.send([.acquire([AcquireRequest(requestID: 1, node: "x", budget: "pro.rpm/consumer=newcomer", want: 1)])])
        await newcomer.wait { !Self.grants(newcomer).isEmpty }
        #expect(Self.grants(newcomer).first?.outcome == .granted, "a new consumer on another node is not locked out")
        newcomer.close()

        // 5. A frame of 290,000 empty items: refused on the count, before decoding.
        let flood = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: "gw-5"))
        try await flood.send([.hello(name: "gw-5")])
        var body: [UInt8] = []
        for _ in 0..<290_000 { body += [0x0a, 0x00] }
        var frame: [UInt8] = [0x22]
        var n = body.count
        while n >= 0x80 { frame.append(UInt8(n & 0x7f) | 0x80); n >>= 7 }
        frame.append(UInt8(n))
        frame += body
        try await flood.send(withUnsafeBytes(of: UInt32(frame.count).bigEndian, Array.init) + frame)
        await flood.wait { flood.isClosed }
        #expect(flood.errors().first?.code == .tooManyItems, "\(flood.errors())")
        try await freshNodeServed(rig, after: "290,000 empty items")

        // 6. Refused frames close the connection after max_refused_frames (5).
        let noisy = try await node(rig, 6)
        for _ in 0..<8 { try? await noisy.send([.hello(name: "again")]) }
        await noisy.wait { noisy.isClosed }
        #expect(noisy.isClosed && noisy.errors().last?.closing == true)
        try await freshNodeServed(rig, after: "refused frames")

        // 7. Heartbeats and status requests sent without reading the answers: the coordinator
        // stops reading from a peer once its unsent replies pass the watermark. (A flood past
        // the connection's item rate is refused: BadInputTests.flood, in virtual numbers.)
        let deaf = try await node(rig, 7)
        try await deaf.channel.setOption(.autoRead, value: false).get()
        var beats = ByteBuffer()
        for i in 0..<20_000 { try FrameEncoder.encode(.heartbeat(UInt64.max - UInt64(i), reply: false), into: &beats, maxFrameBytes: 1 << 20) }
        deaf.channel.writeAndFlush(beats, promise: nil)
        let reader = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .admin, name: "ops"))
        try await reader.send([.hello(name: "ops")])
        await reader.wait { reader.frames().contains { $0.kind == "hello_ack" } }
        try await reader.channel.setOption(.autoRead, value: false).get()
        var asks = ByteBuffer()
        var ask = Allot_V1_Frame()
        ask.statusRequest = Allot_V1_StatusRequest()
        for _ in 0..<200 { try FrameEncoder.encode(ask, into: &asks, maxFrameBytes: 1 << 20) }
        reader.channel.writeAndFlush(asks, promise: nil)
        var paused = false
        for _ in 0..<60 where !paused {
            try await Task.sleep(for: .milliseconds(500))
            paused = try await metrics(rig.admin).split(separator: "\n")
                .contains { $0.hasPrefix("allot_backpressure_pauses_total ") && !$0.hasSuffix(" 0") }
        }
        #expect(paused, "reading paused while replies piled up")
        deaf.close()
        reader.close()
        try await freshNodeServed(rig, after: "heartbeat flood without reading")

        // 8. 200 idle TCP connections: past max_connections (64) closed at once, the rest at
        // the handshake timeout (1 s); a TLS peer that never says hello at the hello timeout.
        var idle: [RawClient] = []
        for _ in 0..<200 { idle.append(try await RawClient.connect(port: rig.port, tls: nil)) }
        try await Task.sleep(for: .milliseconds(2_500))
        let stillOpen = idle.count { !$0.isClosed }
        #expect(stillOpen == 0, "\(stillOpen) idle connections still open")
        let silent = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: "gw-8"))
        await silent.wait { silent.isClosed }
        #expect(silent.isClosed, "a peer without a hello is closed")
        let hushed = try await node(rig, 9)
        try await Task.sleep(for: .milliseconds(3_500))
        #expect(hushed.isClosed, "a peer that stops talking is closed at the idle timeout")
        let text = try await metrics(rig.admin)
        for reason in ["connection_cap", "handshake_timeout", "hello_timeout", "idle_timeout", "too_many_items", "protocol_violation"] {
            #expect(text.contains(#"allot_connections_closed_total{reason="\#(reason)"}"#), "no \(reason) in the metrics")
        }
        try await freshNodeServed(rig, after: "200 idle connections")

        // 9. More connections from one identity than allowed (4): the fifth is refused.
        var same: [RawClient] = []
        for _ in 0..<5 { same.append(try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: "gw-10"))) }
        for c in same { try await c.send([.hello(name: "gw-10")]) }
        await same[4].wait { same.filter(\.isClosed).count >= 1 }
        #expect(same.filter(\.isClosed).count == 1)
        for c in same { c.close() }
        try await freshNodeServed(rig, after: "connections over the per-identity cap")
    }

    /// Raw bytes to a gateway listener; returns the connection (to watch it close).
    func rawHTTP(_ port: Int, _ text: String) async throws -> RawClient {
        let c = try await RawClient.connect(port: port, tls: nil)
        try await c.send(Array(text.utf8))
        return c
    }

    func sidecar(_ port: Int, _ body: String, token: String?) async throws -> (Int, String) {
        var r = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/check")!)
        r.httpMethod = "POST"
        r.httpBody = Data(body.utf8)
        if let token { r.setValue(token, forHTTPHeaderField: "Allot-Sidecar-Token") }
        let (data, response) = try await URLSession.shared.data(for: r)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test("a gateway process survives sidecar abuse and slow clients, and serves a fresh request within 1 s")
    func gatewayAttacks() async throws {
        let rig = try await start()
        defer { rig.stop() }
        // A free port for the metrics listener (bound and released; the gateway binds it next).
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let metricsPort = probe.localAddress!.port!
        try await probe.close()
        let gw = try ProcessTests().start(["gateway", "--config", "allot.yaml", "--coordinator", "127.0.0.1:\(rig.port)",
                                           "--metrics", "127.0.0.1:\(metricsPort)"], in: rig.pki.dir)
        rig.gateway = gw
        for _ in 0..<200 where rig.proxy == 0 {
            try await Task.sleep(for: .milliseconds(50))
            let text = gw.readAll()
            if let r = text.range(of: #"listening on 127\.0\.0\.1:(\d+), admin and sidecar http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                let parts = text[r].split(separator: ":")
                rig.proxy = Int(parts[1].split(separator: ",")[0]) ?? 0
                rig.gatewayAdmin = Int(parts.last!) ?? 0
            }
        }
        try #require(rig.proxy > 0, "the gateway did not start: \(gw.text)")
        func served(after attack: String) async throws {
            #expect(gw.process.isRunning, "the gateway died after: \(attack)")
            let start = ContinuousClock.now
            let (status, body) = try await sidecar(rig.gatewayAdmin, #"{"consumer": "alice", "route": "chat", "model": "small", "input_tokens": 10, "output_tokens": 10}"#,
                                                   token: "test-sidecar-token")
            #expect(status == 200, "after \(attack): \(status) \(body)")
            #expect(ContinuousClock.now - start < .seconds(1), "after: \(attack)")
        }
        for _ in 0..<100 {
            if (try? await sidecar(rig.gatewayAdmin, #"{"consumer": "alice", "route": "chat", "model": "small", "input_tokens": 1, "output_tokens": 1}"#,
                                   token: "test-sidecar-token").0) == 200 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        try await served(after: "start")
        // The metrics listener serves metrics and probes, never the sidecar.
        let (_, onMetrics) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!)
        #expect((onMetrics as? HTTPURLResponse)?.statusCode == 200)
        var check = URLRequest(url: URL(string: "http://127.0.0.1:\(metricsPort)/v1/check")!)
        check.httpMethod = "POST"
        check.setValue("test-sidecar-token", forHTTPHeaderField: "Allot-Sidecar-Token")
        let (_, noSidecar) = try await URLSession.shared.data(for: check)
        #expect((noSidecar as? HTTPURLResponse)?.statusCode == 404)

        // The sidecar without a token, with a wrong one, and with counts at the edges of Int64.
        #expect(try await sidecar(rig.gatewayAdmin, #"{"consumer": "alice"}"#, token: nil).0 == 401)
        #expect(try await sidecar(rig.gatewayAdmin, #"{"consumer": "alice"}"#, token: "guess").0 == 401)
        for n in ["4611686018427387904", "9223372036854775807", "-9223372036854775808", "18446744073709551615"] {
            let (status, body) = try await sidecar(rig.gatewayAdmin, #"{"consumer": "alice", "route": "chat", "model": "small", "input_tokens": \#(n), "output_tokens": \#(n)}"#,
                                                   token: "test-sidecar-token")
            // alice's tier has no token budget: a bound of 2^62 may be admitted; never a crash.
            #expect([200, 400, 429].contains(status), "\(n): \(status) \(body)")
        }
        try await Task.sleep(for: .milliseconds(1_200)) // a refresh interval: the node sizes its asks from what it saw
        try await served(after: "sidecar counts at the edges of Int64")

        // Slow clients on both listeners: a head that never ends, a body that never comes,
        // a kept-alive connection that stays silent. Each is closed at its deadline.
        let slowHead = try await rawHTTP(rig.proxy, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        let slowBody = try await rawHTTP(rig.proxy, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alice\r\nContent-Length: 100\r\n\r\n{")
        let keptAlive = try await rawHTTP(rig.gatewayAdmin, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try await Task.sleep(for: .milliseconds(2_800))
        #expect(slowHead.isClosed, "a slow head holds the proxy listener")
        #expect(slowBody.isClosed, "a slow body holds the proxy listener")
        #expect(keptAlive.isClosed, "an idle kept-alive connection holds the admin listener")
        let text = try await metrics(rig.gatewayAdmin)
        #expect(text.contains(#"allot_gateway_client_timeouts_total{listener="proxy",kind="header"}"#), "\(text.split(separator: "\n").filter { $0.contains("timeouts") })")
        #expect(text.contains(#"kind="body""#) && text.contains(#"kind="idle""#))
        #expect(text.contains(#"allot_gateway_sidecar_refused_total{reason="missing_token"} 1"#))
        try await served(after: "slow clients")
    }
}
