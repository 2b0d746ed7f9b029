import AllotCoordinator
import AllotCore
import AllotNode
import AllotTransport
import Foundation
import Logging
import NIOCore
import NIOPosix

/// A throwaway CA with a coordinator, nodes and an admin, in a temporary directory.
struct TestPKI {
    let dir: URL
    let ca: CertificateAuthority

    init(trustDomain: String = "allot.test", nodes: Int = 8) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-pki-\(UUID().uuidString)")
        ca = try CertificateAuthority.create(in: dir, trustDomain: trustDomain)
        try ca.issue(role: .coordinator, name: "c1", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        try ca.issue(role: .admin, name: "ops")
        for i in 0..<nodes { try ca.issue(role: .node, name: "gw-\(i)") }
    }

    func material(_ role: PeerIdentity.Role, _ name: String) throws -> TLSMaterialStore {
        try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: role, name: name) }
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }
}

let testGroup = MultiThreadedEventLoopGroup.singleton

func quietLogger(_ label: String) -> Logger {
    var l = Logger(label: label)
    l.logLevel = .critical
    return l
}

/// A coordinator serving `budgets` over mTLS on a free loopback port.
struct RunningCoordinator {
    let server: CoordinatorServer
    let port: Int
    let tls: TLSMaterialStore
    var core: CoordinatorCore { server.core }

    static func start(pki: TestPKI, budgets: [BudgetSpec], settings: CoordinatorCore.Settings = .init()) async throws -> RunningCoordinator {
        let core = try CoordinatorCore(settings: settings, budgets: budgets, now: WallClock.now())
        let tls = try pki.material(.coordinator, "c1")
        let server = CoordinatorServer(core: core, tls: tls, group: testGroup, logger: quietLogger("coordinator"))
        let address = try await server.start(host: "127.0.0.1", port: 0)
        return RunningCoordinator(server: server, port: address.port!, tls: tls)
    }
}
