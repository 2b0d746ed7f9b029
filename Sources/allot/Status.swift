import AllotTransport
import AllotWire
import ArgumentParser
import Foundation
import NIOPosix
import Synchronization

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a coordinator's budgets (limit, outstanding, consumed, nodes holding), with an admin certificate.")

    @Option(help: "The coordinator, HOST:PORT.") var coordinator: String
    @Option(help: "Directory with ca.pem, trust-domain and the admin certificate.") var tlsDir: String
    @Option(help: "Admin certificate name (admin-<name>.pem).") var name = "ops"
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() async throws {
        guard let colon = coordinator.lastIndex(of: ":"), let port = Int(coordinator[coordinator.index(after: colon)...]) else {
            throw ValidationError("--coordinator must be HOST:PORT (got '\(coordinator)')")
        }
        let host = String(coordinator[..<colon])
        let dir = URL(fileURLWithPath: tlsDir)
        let adminName = name
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .admin, name: adminName) }
        let transport = TLSLeaseTransport(host: host, port: port, tls: tls, group: MultiThreadedEventLoopGroup.singleton)
        let response = try await Self.fetch(transport)
        if json {
            print(try response.jsonString())
        } else {
            print("coordinator \(response.coordinatorName), \(response.connectedNodes) nodes connected")
            let header = ["budget", "kind", "limit", "pool", "outstanding", "consumed", "expired", "holders", "held_available"]
            let rows = response.budgets.map { b in
                [b.budget, b.kind, "\(b.limit)", "\(b.pool)", "\(b.outstanding)", "\(b.consumed)", "\(b.expiredSpent)", "\(b.holders)",
                 "\(b.heldAvailable)"]
            }
            let widths = header.indices.map { i in max(header[i].count, rows.map { $0[i].count }.max() ?? 0) + 2 }
            func line(_ r: [String]) -> String { zip(r, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined() }
            print(line(header))
            for r in rows { print(line(r)) }
        }
    }

    /// Every page of the coordinator's status (pages of at most one frame each).
    static func fetch(_ transport: TLSLeaseTransport) async throws -> Allot_V1_StatusResponse {
        let result = OneShot<Allot_V1_StatusResponse>()
        let pages = Pages()
        return try await withCheckedThrowingContinuation { continuation in
            result.set(continuation)
            Task {
                do {
                    let conn = try await transport.connect(onFrame: { frame in
                        switch frame.body {
                        case .statusResponse(let s):
                            let (conn, next) = pages.m.withLock { p -> ((any LeaseConnection)?, Allot_V1_StatusResponse?) in
                                p.status.coordinatorName = s.coordinatorName
                                p.status.connectedNodes = s.connectedNodes
                                p.status.budgets += s.budgets
                                return (p.connection, s.next.isEmpty ? p.status : nil)
                            }
                            if let next { result.resume(.success(next)) } else { conn?.send([Self.request(after: s.next)]) }
                        case .error(let e): result.resume(.failure(ValidationError("coordinator refused: \(e.message)")))
                        default: break
                        }
                    }, onClose: {
                        result.resume(.failure(ValidationError("the coordinator closed the connection")))
                    })
                    pages.m.withLock { $0.connection = conn }
                    conn.send([.hello(name: "status"), Self.request(after: "")])
                } catch {
                    result.resume(.failure(ValidationError("cannot reach the coordinator: \(error)")))
                }
            }
        }
    }

    final class Pages: Sendable {
        let m = Mutex<(connection: (any LeaseConnection)?, status: Allot_V1_StatusResponse)>((nil, .init()))
    }

    static func request(after: String) -> Allot_V1_Frame {
        var req = Allot_V1_Frame()
        req.statusRequest.after = after
        return req
    }
}

/// A continuation resumed at most once, from any thread.
final class OneShot<T: Sendable>: Sendable {
    private let c = Mutex<CheckedContinuation<T, any Error>?>(nil)
    func set(_ k: CheckedContinuation<T, any Error>) { c.withLock { $0 = k } }
    func resume(_ r: Result<T, any Error>) {
        let k = c.withLock { v -> CheckedContinuation<T, any Error>? in defer { v = nil }; return v }
        k?.resume(with: r)
    }
}
