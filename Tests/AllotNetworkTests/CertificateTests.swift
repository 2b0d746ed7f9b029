import AllotCoordinator
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import NIOSSL
import Testing

/// Certificates over the real mTLS listener (real time): every CA in `ca.pem` is trusted (a
/// CA rotation overlaps), a connection ends when its peer's certificate expires, and a deny
/// list of SPIFFE IDs and serial numbers refuses new connections and closes open ones on reload.
@Suite("Certificates: CA overlap, expiry, deny list", .serialized)
struct CertificateTests {
    static let budget = try! BudgetSpec(id: "q", unit: .requests, kind: .quota(allowance: 1_000_000, window: try! CalendarWindow(.day)))

    func served(_ c: RunningCoordinator, _ tls: TLSConfiguration, name: String) async throws -> RawClient {
        let raw = try await RawClient.connect(port: c.port, tls: tls)
        try? await raw.send([.hello(name: name), .acquire([AcquireRequest(requestID: 1, node: "x", budget: "q", want: 5)])])
        await raw.wait { raw.isClosed || raw.frames().contains { $0.kind == "grants" } }
        return raw
    }

    static func granted(_ raw: RawClient) -> Bool {
        raw.frames().contains { f in if case .grants(let g) = f.body { g.items.first?.amount ?? 0 > 0 } else { false } }
    }

    @Test("two CAs in ca.pem: nodes of the old and of the new one are both served")
    func caOverlap() async throws {
        let pki = try TestPKI(nodes: 1)
        let next = try TestPKI(nodes: 1) // the new CA, same trust domain
        defer { pki.remove(); next.remove() }
        let c = try await RunningCoordinator.start(pki: pki, budgets: [Self.budget])
        // Before: only the old CA.
        let early = try await served(c, try RawClient.tls(next, role: .node, name: "gw-0", trust: pki), name: "gw-0")
        #expect(!Self.granted(early))
        // Both CAs in ca.pem, reloaded.
        let caFile = pki.dir.appendingPathComponent("ca.pem")
        let both = try String(contentsOf: caFile, encoding: .utf8) + "\n" + String(contentsOf: next.dir.appendingPathComponent("ca.pem"), encoding: .utf8)
        try both.write(to: caFile, atomically: true, encoding: .utf8)
        try c.tls.reload()
        let old = try await served(c, try RawClient.tls(pki, role: .node, name: "gw-0"), name: "gw-0")
        let new = try await served(c, try RawClient.tls(next, role: .node, name: "gw-0", trust: pki), name: "gw-0")
        #expect(Self.granted(old) && Self.granted(new), "\(new.errors()) \(new.inbox.error.withLock { $0 } ?? "") \(c.core.counters.handshakeFailures)")
        for r in [early, old, new] { r.close() }
        try await c.server.shutdown()
    }

    @Test("a connection is closed when its peer's certificate expires")
    func expiry() async throws {
        let pki = try TestPKI(nodes: 0)
        defer { pki.remove() }
        // Valid now, for 3 more seconds.
        try pki.ca.issue(role: .node, name: "brief", validFor: 0, notBefore: Date().addingTimeInterval(-297))
        let c = try await RunningCoordinator.start(pki: pki, budgets: [Self.budget])
        let raw = try await served(c, try RawClient.tls(pki, role: .node, name: "brief"), name: "brief")
        #expect(Self.granted(raw))
        try await Task.sleep(for: .seconds(1))
        #expect(!raw.isClosed)
        await raw.wait(.seconds(5)) { raw.isClosed }
        #expect(raw.isClosed, "the connection outlived the certificate")
        #expect(c.core.counters.closedByLimit["certificate_expired"] == 1)
        try await c.server.shutdown()
    }

    @Test("the deny list refuses an identity and a serial number, and a reload closes their open connections")
    func denyList() async throws {
        let pki = try TestPKI(nodes: 3)
        defer { pki.remove() }
        let c = try await RunningCoordinator.start(pki: pki, budgets: [Self.budget])
        let open = try await served(c, try RawClient.tls(pki, role: .node, name: "gw-2"), name: "gw-2")
        #expect(Self.granted(open))
        let serial = try DenyList.serial(pemFile: pki.dir.appendingPathComponent("node-gw-2.pem"))
        try """
        # revoked
        spiffe://allot.test/node/gw-0
        \(serial.uppercased())   # gw-2's certificate
        """.write(to: pki.dir.appendingPathComponent("deny-list"), atomically: true, encoding: .utf8)
        try c.tls.reload()
        #expect(c.core.disconnect(denied: c.tls.current.denyList) == 1)
        await open.wait { open.isClosed }
        #expect(open.isClosed)
        let byName = try await served(c, try RawClient.tls(pki, role: .node, name: "gw-0"), name: "gw-0")
        let bySerial = try await served(c, try RawClient.tls(pki, role: .node, name: "gw-2"), name: "gw-2")
        #expect(!Self.granted(byName) && byName.errors().first?.code == .permissionDenied)
        #expect(!Self.granted(bySerial) && bySerial.errors().first?.message.contains("deny list") == true)
        let other = try await served(c, try RawClient.tls(pki, role: .node, name: "gw-1"), name: "gw-1")
        #expect(Self.granted(other))
        #expect(c.core.counters.rejected["denied"] == 2)
        // A malformed line is refused and the previous list stays in force.
        try "not-a-serial!\n".write(to: pki.dir.appendingPathComponent("deny-list"), atomically: true, encoding: .utf8)
        #expect(throws: TransportError.self) { try c.tls.reload() }
        #expect(c.tls.current.denyList.identities.contains("spiffe://allot.test/node/gw-0"))
        for r in [byName, bySerial, other] { r.close() }
        try await c.server.shutdown()
    }
}
