import AllotCoordinator
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import NIOCore
import NIOSSL
import Testing

/// Bad input over the real mTLS listener: each is rejected or closed with a logged reason
/// and a metric, never crashes the coordinator, never grants, and everyone else is served.
@Suite("Bad input at the coordinator", .serialized)
struct BadInputTests {
    static let budget = try! BudgetSpec(id: "rps", unit: .requests, kind: .rate(limit: 1000, period: .seconds(1), burst: 1000))
    /// Touched only by the healthy node that checks the coordinator still serves.
    static let other = try! BudgetSpec(id: "other", unit: .requests, kind: .rate(limit: 1000, period: .seconds(1), burst: 1000))

    /// A fresh coordinator, the test's body, then proof that a healthy node is still served.
    func withCoordinator(_ body: (TestPKI, RunningCoordinator) async throws -> Void) async throws {
        let pki = try TestPKI(nodes: 2)
        defer { pki.remove() }
        var settings = CoordinatorCore.Settings()
        settings.session.itemsPerSecond = 100
        let c = try await RunningCoordinator.start(pki: pki, budgets: [Self.budget, Self.other], settings: settings)
        try await body(pki, c)
        let healthy = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-1"))
        try await healthy.send([.hello(name: "gw-1"),
                                .acquire([AcquireRequest(requestID: 1, node: "x", budget: "other", want: 10, demandRate: 10)])])
        await healthy.wait { healthy.frames().contains { $0.kind == "grants" } }
        let grants = healthy.frames().compactMap { f -> Allot_V1_GrantBatch? in if case .grants(let g) = f.body { return g } else { return nil } }
        #expect(grants.first?.items.first?.amount ?? 0 > 0, "a healthy node is still served")
        healthy.close()
        try await c.server.shutdown()
    }

    func grantsSent(_ c: RunningCoordinator) -> Int64 { c.core.counters.grants }

    @Test("plaintext bytes on the TLS port: handshake failure, closed")
    func plaintext() async throws {
        try await withCoordinator { _, c in
            let raw = try await RawClient.connect(port: c.port, tls: nil)
            try await raw.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed)
            await raw.wait { c.core.counters.handshakeFailures.values.reduce(0, +) > 0 }
            #expect(c.core.counters.handshakeFailures["not_tls"] == 1, "\(c.core.counters.handshakeFailures)")
        }
    }

    @Test("a client without a certificate is refused")
    func noCertificate() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki))
            try? await raw.send([.hello(name: "anon"), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 10)])])
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed && raw.frames().isEmpty)
            await raw.wait { c.core.counters.handshakeFailures["no_client_certificate"] != nil }
            #expect(c.core.counters.handshakeFailures["no_client_certificate"] == 1, "\(c.core.counters.handshakeFailures)")
            #expect(grantsSent(c) == 0)
        }
    }

    @Test("a certificate from another CA is refused")
    func otherCA() async throws {
        try await withCoordinator { pki, c in
            let rogue = try TestPKI(nodes: 1)
            defer { rogue.remove() }
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(rogue, role: .node, name: "gw-0", trust: pki))
            try? await raw.send([.hello(name: "gw-0"), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 10)])])
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed && raw.frames().isEmpty)
            await raw.wait { c.core.counters.handshakeFailures["untrusted_certificate"] != nil }
            #expect(c.core.counters.handshakeFailures["untrusted_certificate"] == 1, "\(c.core.counters.handshakeFailures)")
            #expect(grantsSent(c) == 0)
        }
    }

    @Test("an expired certificate is refused")
    func expired() async throws {
        try await withCoordinator { pki, c in
            try pki.ca.issue(role: .node, name: "old", validFor: 1, notBefore: Date().addingTimeInterval(-10 * 86_400))
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "old"))
            try? await raw.send([.hello(name: "old"), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 10)])])
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed && raw.frames().isEmpty)
            await raw.wait { !c.core.counters.handshakeFailures.isEmpty }
            // BoringSSL reports an expired certificate as a failed verification, like an unknown CA.
            #expect(c.core.counters.handshakeFailures["untrusted_certificate"] == 1, "\(c.core.counters.handshakeFailures)")
        }
    }

    @Test("a certificate from another trust domain is refused")
    func otherTrustDomain() async throws {
        try await withCoordinator { pki, c in
            // Same CA key material is not reachable from here, so build a CA that the server
            // trusts but whose leaves name another domain: reuse this CA with a forged domain file.
            try "elsewhere.test\n".write(to: pki.dir.appendingPathComponent("trust-domain"), atomically: true, encoding: .utf8)
            let ca = try CertificateAuthority.open(pki.dir)
            try ca.issue(role: .node, name: "alien")
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "alien"))
            try await raw.send([.hello(name: "alien")])
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed)
            #expect(raw.errors().first?.code == .permissionDenied)
            #expect(c.core.counters.rejected["identity"] == 1)
            try "allot.test\n".write(to: pki.dir.appendingPathComponent("trust-domain"), atomically: true, encoding: .utf8)
        }
    }

    @Test("a node certificate sending a coordinator-only message is cut off")
    func nodeActingAsCoordinator() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            var push = Allot_V1_Grant()
            push.budget = "rps"
            push.rate = 1_000_000
            try await raw.send([.hello(name: "gw-0"), .grants([push], push: true)])
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed)
            #expect(raw.errors().last?.code == .permissionDenied)
            #expect(c.core.counters.rejected["permission_denied"] == 1)
            // And it may not read the coordinator's state either.
            let again = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            var status = Allot_V1_Frame()
            status.statusRequest = Allot_V1_StatusRequest()
            try await again.send([.hello(name: "gw-0"), status])
            await again.wait { !again.errors().isEmpty }
            #expect(again.errors().first?.code == .permissionDenied)
            #expect(!again.frames().contains { $0.kind == "status_response" })
            again.close()
        }
    }

    @Test("a length prefix larger than the maximum closes the connection before reading it")
    func hugeLength() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await raw.send([0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3])
            await raw.wait { raw.isClosed }
            #expect(raw.isClosed)
            #expect(raw.errors().first?.code == .frameTooLarge)
            #expect(c.core.counters.frameErrors["frame_too_large"] == 1)
        }
    }

    @Test("a truncated frame is counted when the connection ends")
    func truncated() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await raw.send([0, 0, 0, 50, 1, 2, 3])
            try await Task.sleep(for: .milliseconds(100))
            raw.close()
            await raw.wait { c.core.counters.frameErrors["truncated_frame"] != nil }
            #expect(c.core.counters.frameErrors["truncated_frame"] == 1)
            #expect(grantsSent(c) == 0)
        }
    }

    @Test("garbage after a valid frame: the frame is served, then the connection is closed")
    func garbageAfterValid() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            var b = ByteBuffer()
            try FrameEncoder.encode(.hello(name: "gw-0"), into: &b, maxFrameBytes: 1 << 20)
            b.writeBytes([0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF])
            try await raw.send(Array(b.readableBytesView))
            await raw.wait { raw.isClosed }
            #expect(raw.frames().first?.kind == "hello_ack")
            #expect(raw.errors().first?.code == .malformedFrame)
            #expect(c.core.counters.frameErrors["malformed_frame"] == 1)
        }
    }

    @Test("an unknown message type is rejected, the connection stays")
    func unknownType() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await raw.send([.hello(name: "gw-0")])
            try await raw.send([0, 0, 0, 3, 0x98, 0x06, 0x01]) // field 99: a body from the future
            try await raw.send([.heartbeat(1, reply: false)])
            await raw.wait { raw.frames().contains { $0.kind == "heartbeat" } }
            #expect(raw.errors().first?.code == .protocolViolation)
            #expect(!raw.isClosed)
            #expect(c.core.counters.rejected["protocol_violation"] == 1)
            raw.close()
        }
    }

    @Test("a wrong protocol version is refused")
    func wrongVersion() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            var hello = Allot_V1_Frame.hello(name: "gw-0")
            hello.hello.protocolVersion = 99
            try await raw.send([hello])
            await raw.wait { raw.isClosed }
            #expect(raw.errors().first?.code == .unsupportedVersion)
            #expect(c.core.counters.rejected["unsupported_version"] == 1)
        }
    }

    @Test("an acquire for an unknown budget is answered as such and grants nothing")
    func unknownBudget() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await raw.send([.hello(name: "gw-0"), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "nope", want: 10)])])
            await raw.wait { raw.frames().contains { $0.kind == "grants" } }
            let g = raw.frames().compactMap { f -> Allot_V1_Grant? in if case .grants(let b) = f.body { return b.items.first } else { return nil } }.first
            #expect(g?.outcome == .unknownBudget && g?.amount == 0)
            #expect(c.core.counters.rejected["unknown_budget"] == 1)
            raw.close()
        }
    }

    @Test("a release of more than was granted is clamped, counted, and grants nothing")
    func overRelease() async throws {
        let pki = try TestPKI(nodes: 1)
        defer { pki.remove() }
        let quota = try BudgetSpec(id: "q", unit: .requests, kind: .quota(allowance: 100, window: try CalendarWindow(.day)))
        let c = try await RunningCoordinator.start(pki: pki, budgets: [quota])
        let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
        try await raw.send([.hello(name: "gw-0"), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "q", want: 10)])])
        await raw.wait { raw.frames().contains { $0.kind == "grants" } }
        let lease = raw.frames().compactMap { f -> UInt64? in if case .grants(let b) = f.body { return b.items.first?.leaseID } else { return nil } }.first ?? 0
        try await raw.send([.release([ReleaseRequest(node: "x", budget: "q", leaseID: lease, consumed: 0, released: 1_000_000, final: false)])])
        await raw.wait { c.core.counters.overclaims > 0 }
        #expect(c.core.counters.overclaims == 1)
        let st = try #require(c.core.allocatorStatus("q"))
        #expect(st.pool == 100 && st.outstanding == 0) // only the 10 granted came back
        raw.close()
        try await c.server.shutdown()
    }

    @Test("a flood of acquires from one connection is bounded; others are still served")
    func flood() async throws {
        try await withCoordinator { pki, c in
            let raw = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await raw.send([.hello(name: "gw-0")])
            var frames: [Allot_V1_Frame] = []
            for i in 0..<100 {
                frames.append(.acquire((0..<10).map { AcquireRequest(requestID: UInt64(i * 10 + $0 + 1), node: "x", budget: "rps", want: 1) }))
            }
            try await raw.send(frames) // 1,000 items at once against 100 per second
            await raw.wait { raw.isClosed }
            #expect(raw.errors().contains { $0.code == .rateLimited })
            // 20 refused frames are tolerated; the 21st closes the connection.
            #expect((c.core.counters.rejected["rate_limited"] ?? 0) == 21)
            #expect(raw.isClosed && raw.errors().last?.closing == true)
            #expect(grantsSent(c) <= 200) // at most the connection's burst (2× 100/s)
            raw.close()

            // Heartbeats cost a reply each: a flood of them is bounded by the same rate.
            let beats = try await RawClient.connect(port: c.port, tls: try RawClient.tls(pki, role: .node, name: "gw-1"))
            try await beats.send([.hello(name: "gw-1")] + (0..<1_000).map { .heartbeat(UInt64($0), reply: false) })
            await beats.wait { beats.isClosed }
            let echoed = beats.frames().count { $0.kind == "heartbeat" }
            #expect(beats.isClosed && echoed <= 200 && echoed > 0, "\(echoed) heartbeats echoed")
            beats.close()
        }
    }
}
