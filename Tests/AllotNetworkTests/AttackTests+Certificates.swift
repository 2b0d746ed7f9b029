import AllotCluster
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import FoundationNetworking
import NIOCore
import NIOPosix
import Testing

/// The certificate and cluster-membership attacks of `AttackTests`, against real processes.
extension AttackTests {
    @Test("certificates on a coordinator process: a second CA in ca.pem, a deny list on SIGHUP, a certificate that expires mid-connection")
    func certificates() async throws {
        let rig = try await start()
        defer { rig.stop() }
        // A node of a new CA (same trust domain): refused, then served once ca.pem holds both and the coordinator reloads.
        let next = try TestPKI(nodes: 1)
        defer { next.remove() }
        let before = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(next, role: .node, name: "gw-0", trust: rig.pki))
        await before.wait { before.isClosed }
        #expect(before.isClosed)
        let caFile = rig.pki.dir.appendingPathComponent("ca.pem")
        try (String(contentsOf: caFile, encoding: .utf8) + "\n" + String(contentsOf: next.dir.appendingPathComponent("ca.pem"), encoding: .utf8))
            .write(to: caFile, atomically: true, encoding: .utf8)
        kill(rig.coordinator.process.processIdentifier, SIGHUP)
        try await Task.sleep(for: .milliseconds(300))
        let after = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(next, role: .node, name: "gw-0", trust: rig.pki))
        try await after.send([.hello(name: "gw-0"), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "fresh", want: 5)])])
        await after.wait { !Self.grants(after).isEmpty }
        #expect(Self.grants(after).first?.amount ?? 0 > 0, "a node of the new CA is served")
        after.close()
        // Deny list: an open connection of the listed identity is closed on SIGHUP; it cannot come back.
        let listed = try await node(rig, 11)
        try "spiffe://allot.test/node/gw-11\n".write(to: rig.pki.dir.appendingPathComponent("deny-list"), atomically: true, encoding: .utf8)
        kill(rig.coordinator.process.processIdentifier, SIGHUP)
        await listed.wait { listed.isClosed }
        #expect(listed.isClosed, "the denied identity's open connection is closed")
        let again = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: "gw-11"))
        try? await again.send([.hello(name: "gw-11")])
        await again.wait { again.isClosed }
        #expect(again.errors().first?.code == .permissionDenied)
        try await freshNodeServed(rig, after: "a deny list")
        // A certificate valid for 2 more seconds: the connection ends with it.
        try rig.pki.ca.issue(role: .node, name: "brief", validFor: 0, notBefore: Date().addingTimeInterval(-298))
        let brief = try await RawClient.connect(port: rig.port, tls: try RawClient.tls(rig.pki, role: .node, name: "brief"))
        try await brief.send([.hello(name: "brief")])
        await brief.wait { brief.frames().contains { $0.kind == "hello_ack" } }
        #expect(!brief.isClosed)
        await brief.wait(.seconds(4)) { brief.isClosed }
        #expect(brief.isClosed, "the connection outlived the certificate")
        #expect(try await metrics(rig.admin).contains(#"allot_connections_closed_total{reason="certificate_expired"} 1"#))
        try await freshNodeServed(rig, after: "an expired certificate")
    }

    @Test("a coordinator process in a cluster: a piggybacked member and a coordinator certificate outside cluster.members never count")
    func rumours() async throws {
        let pki = try TestPKI(nodes: 2)
        defer { pki.remove() }
        try pki.ca.issue(role: .coordinator, name: "c9")
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close()
        try """
        coordinator: {name: c1, listen: 127.0.0.1:\(port), admin: 127.0.0.1:0}
        cluster: {seeds: [127.0.0.1:\(port)], protocol_period: 200ms, ping_timeout: 80ms, suspicion_timeout: 1s, join_timeout: 300ms}
        tls: {dir: \(pki.dir.path)}
        lease: {ttl: 2s, refresh_interval: 500ms}
        budgets:
          - {id: r, unit: requests, kind: rate, limit: 1000, burst: 1000}
        """.write(to: pki.dir.appendingPathComponent("allot.yaml"), atomically: true, encoding: .utf8)
        let c = try ProcessTests().start(["coordinator", "--config", "allot.yaml"], in: pki.dir)
        defer { c.process.terminate(); c.process.waitUntilExit() }
        var admin = 0
        for _ in 0..<200 where admin == 0 {
            try await Task.sleep(for: .milliseconds(50))
            if let r = c.readAll().range(of: #"admin http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                admin = Int(c.text[r].split(separator: ":").last!) ?? 0
            }
        }
        try #require(admin > 0, "the coordinator did not start: \(c.text)")
        func members() async throws -> Int {
            let text = try await metrics(admin)
            let line = text.split(separator: "\n").first { $0.hasPrefix("allot_cluster_members ") }
            return line.flatMap { Double($0.split(separator: " ").last!) }.map { Int($0) } ?? -1
        }
        for _ in 0..<40 where try await members() != 1 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await members() == 1)
        // c9 (a valid coordinator certificate, not a member) gossips: itself alive, and a ghost.
        let rogue = try await RawClient.connect(port: port, tls: try RawClient.tls(pki, role: .coordinator, name: "c9"))
        let me = MemberID(name: "c1", address: "127.0.0.1:\(port)")
        var frames: [Allot_V1_Frame] = [.hello(name: "c9")]
        for seq in 1...5 {
            let e = Membership.Envelope(from: MemberID(name: "c9", address: "127.0.0.1:1"), to: me, message: .ping(seq: UInt64(seq)),
                                        updates: [Membership.Update(member: MemberID(name: "ghost", address: "127.0.0.1:2"), incarnation: 1, state: .alive)])
            frames.append(e.wire)
        }
        try await rogue.send(frames)
        var most = 0
        for _ in 0..<20 {
            most = max(most, try await members())
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(most == 1, "counted \(most) members")
        #expect(c.process.isRunning)
        rogue.close()
    }
}
