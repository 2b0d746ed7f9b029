import AllotTesting
import AllotCoordinator
import AllotCore
import AllotNode
import AllotTransport
import AllotWire
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing

@Suite("Coordinator configuration")
struct ConfigTests {
    let good = """
    coordinator:
      name: c1
      listen: 127.0.0.1:7400
    tls:
      dir: certs
    lease:
      ttl: 10s
      refresh_interval: 1s
    budgets:
      - id: rps
        kind: rate
        limit: 100
      - id: tokens-day
        unit: tokens
        kind: quota
        allowance: 1000
        window: day
        time_zone: Europe/Berlin
        reset: "06:00"
      - id: inflight
        kind: concurrency
        limit: 8
        fail_mode: static
        static_allowance: 2
    """

    @Test("a full file parses into budgets and settings")
    func parses() throws {
        let c = try CoordinatorConfig(yaml: good)
        #expect(c.listenPort == 7400 && c.name == "c1" && c.budgets.count == 3)
        #expect(c.budgets[0].kind == .rate(limit: 100, period: .seconds(1), burst: 100))
        #expect(c.budgets[1].unit == .tokens)
        #expect(c.budgets[2].failMode == .static(allowancePerTTL: 2))
        #expect(c.core.allocator.leaseTTL == .seconds(10))
    }

    @Test("tiers: budgets are created the first time a node asks for tier.template/key")
    func tiers() async throws {
        let c = try CoordinatorConfig(yaml: """
        tiers:
          - name: pro
            templates:
              - name: tpm
                unit: tokens
                kind: rate
                limit: 60000
                period: 1m
                scope: [consumer]
          - name: free
            templates:
              - name: day
                kind: quota
                allowance: 100
                window: day
                scope: [consumer]
        budgets:
          - id: pro.tpm/consumer=vip
            unit: tokens
            kind: rate
            limit: 600000
            period: 1m
        """)
        #expect(c.tiers.map(\.name) == ["pro", "free"])
        let core = try CoordinatorCore(settings: c.core, budgets: c.budgets, now: WallClock.now())
        let ask = { (budget: String, id: UInt64) -> Allot_V1_Grant in
            var a = Allot_V1_Acquire()
            a.requestID = id
            a.budget = budget
            a.want = 1000
            guard case .grants(let g) = core.acquire([a], from: "gw-0", now: WallClock.now()).first?.body else { return Allot_V1_Grant() }
            return g.items[0]
        }
        #expect(ask("pro.tpm/consumer=alice", 1).outcome == .granted)
        #expect(core.allocatorStatus("pro.tpm/consumer=alice")?.kind == .rate(limit: 60_000, period: .seconds(60), burst: 60_000))
        #expect(ask("free.day/consumer=bob", 2).amount == 100)
        #expect(core.allocatorStatus("pro.tpm/consumer=vip")?.kind == .rate(limit: 600_000, period: .seconds(60), burst: 600_000))
        #expect(ask("gold.tpm/consumer=carol", 3).outcome == .unknownBudget)
        #expect(ask("pro.tpm/team=ml", 4).outcome == .unknownBudget)
    }

    @Test("bad configuration is refused with the field named", arguments: [
        ("budgets:\n  - id: x\n    kind: rate\n    limit: 0\n", "budgets[0]"),
        ("budgets:\n  - id: x\n    kind: rate\n    limit: 5\n    burst: 0\n", "burst"),
        ("budgets:\n  - id: x\n    kind: bucket\n    limit: 5\n", "budgets[0].kind"),
        ("budgets:\n  - id: x\n    unit: gallons\n    kind: rate\n    limit: 5\n", "gallons"),
        ("budgets:\n  - id: x\n    kind: rate\n    limit: 5\n    brust: 5\n", "budgets[0].brust: unknown key"),
        ("lease:\n  ttl: soon\nbudgets:\n  - id: x\n    kind: rate\n    limit: 5\n", "lease.ttl"),
        ("lease:\n  ttl: 1s\n  refresh_interval: 2s\nbudgets:\n  - id: x\n    kind: rate\n    limit: 5\n", "refresh_interval"),
        ("coordinator:\n  listen: nowhere\nbudgets:\n  - id: x\n    kind: rate\n    limit: 5\n", "coordinator.listen"),
        ("budgets:\n  - id: x\n    kind: quota\n    allowance: 5\n    window: day\n    time_zone: Europe/Berlin\n    reset: \"02:30\"\n", "does not exist"),
        ("budgets: []\n", "no budget"),
        ("tiers:\n  - name: pro\n    templates:\n      - name: tpm\n        kind: rate\n        limit: 5\n        scope: [planet]\n", "planet"),
        ("tiers:\n  - name: pro\n    templates:\n      - name: tpm\n        kind: rate\n        limit: 5\n        colour: red\n", "tiers[0].templates[0].colour: unknown key"),
        ("colour: blue\n", "colour: unknown key"),
        ("budgets:\n  - id: x\n    kind: rate\n    limit: 5\n  - id: x\n    kind: rate\n    limit: 5\n", "defined twice"),
        (": : :\n", "YAML"),
    ])
    func refused(_ yaml: String, _ mentions: String) {
        #expect { try CoordinatorConfig(yaml: yaml) } throws: { error in
            "\(error)".contains(mentions)
        }
    }
}

@Suite("Coordinator operations", .serialized)
struct OperationsTests {
    @Test("admin endpoint: /metrics in Prometheus text, /healthz, /readyz")
    func admin() async throws {
        let pki = try TestPKI(nodes: 1)
        defer { pki.remove() }
        let c = try await RunningCoordinator.start(pki: pki, budgets: [try BudgetSpec(id: "rps", unit: .requests, kind: .rate(limit: 10, period: .seconds(1), burst: 10))])
        let admin = AdminServer(core: c.core, group: testGroup, ready: { true })
        let address = try await admin.start(host: "127.0.0.1", port: 0)
        func get(_ path: String) throws -> (Int, String) {
            let url = URL(string: "http://127.0.0.1:\(address.port!)\(path)")!
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            p.arguments = ["-s", "-w", "\n%{http_code}", url.absoluteString]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            p.waitUntilExit()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let code = Int(out.split(separator: "\n").last ?? "") ?? 0
            return (code, out)
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else { return }
        let (m, body) = try get("/metrics")
        #expect(m == 200)
        #expect(body.contains("allot_grants_total") && body.contains("allot_budget_pool{budget=\"rps\"} 10"))
        #expect(try get("/healthz").0 == 200)
        #expect(try get("/readyz").0 == 200)
        #expect(try get("/nope").0 == 404)
        await admin.shutdown()
        try await c.server.shutdown()
    }

    @Test("certificates are reloaded without a restart; existing connections and leases carry on")
    func reload() async throws {
        let pki = try TestPKI(nodes: 2)
        defer { pki.remove() }
        let budget = try BudgetSpec(id: "q", unit: .requests, kind: .quota(allowance: 1000, window: try CalendarWindow(.day)))
        let core = try CoordinatorCore(settings: .init(), budgets: [budget], now: WallClock.now())
        let store = try pki.material(.coordinator, "c1")
        let server = CoordinatorServer(core: core, tls: store, group: testGroup, logger: quietLogger("c"))
        let port = try await server.start(host: "127.0.0.1", port: 0).port!
        // A node connects and takes a lease.
        let enforcer = try SharedEnforcer(settings: EnforcerSettings(node: "gw-0"))
        let set = BudgetSet(enforcer.register(budget))
        let client = LeaseClient(enforcer: enforcer,
                                 transport: TLSLeaseTransport(host: "127.0.0.1", port: port, tls: try pki.material(.node, "gw-0"), group: testGroup),
                                 logger: quietLogger("n"))
        let runner = Task { await client.run() }
        for _ in 0..<100 where !enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted {
            try await Task.sleep(for: .milliseconds(20))
        }
        let lease = enforcer.withEnforcer { $0.status(set[0]).leaseID }
        #expect(lease != 0)
        // Rotate the coordinator's certificate on disk and reload.
        let before = try String(contentsOf: pki.dir.appendingPathComponent("coordinator-c1.pem"), encoding: .utf8)
        try pki.ca.issue(role: .coordinator, name: "c1")
        try store.reload()
        #expect(try String(contentsOf: pki.dir.appendingPathComponent("coordinator-c1.pem"), encoding: .utf8) != before)
        // The old connection and its lease are untouched...
        #expect(enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted)
        #expect(enforcer.withEnforcer { $0.status(set[0]).leaseID } == lease)
        // ...and a new node connects with the new certificate.
        let raw = try await RawClient.connect(port: port, tls: try RawClient.tls(pki, role: .node, name: "gw-1"))
        try await raw.send([.hello(name: "gw-1")])
        await raw.wait { raw.frames().contains { $0.kind == "hello_ack" } }
        #expect(raw.frames().contains { $0.kind == "hello_ack" })
        raw.close()
        // A broken file on reload keeps the old material.
        try "garbage".write(to: pki.dir.appendingPathComponent("coordinator-c1.pem"), atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try store.reload() }
        runner.cancel()
        await runner.value
        try await server.shutdown()
    }

    @Test("the coordinator service notices new certificate files by itself and serves them to new connections")
    func fileChangeReload() async throws {
        let pki = try TestPKI(nodes: 1)
        defer { pki.remove() }
        var config = try CoordinatorConfig(yaml: "budgets:\n  - id: rps\n    kind: rate\n    limit: 100\n")
        config.name = "c1"
        config.core.name = "c1"
        config.tlsDirectory = pki.dir.path
        config.listenPort = 0
        config.adminPort = 0
        let core = try CoordinatorCore(settings: config.core, budgets: config.budgets, now: WallClock.now())
        let port = Mutex(0)
        let service = CoordinatorService(config: config, core: core, tls: try pki.material(.coordinator, "c1"),
                                         logger: quietLogger("c")) { address, _ in port.withLock { $0 = address.port! } }
        let group = ServiceGroup(services: service.services(), logger: quietLogger("g"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for _ in 0..<100 where port.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(20)) }
            let p = port.withLock { $0 }
            let before = try await RawClient.connect(port: p, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await before.send([.hello(name: "gw-0")])
            await before.wait { before.frames().contains { $0.kind == "hello_ack" } }
            let oldCert = try await before.serverCertificate()
            try await Task.sleep(for: .seconds(1)) // file times have one-second resolution on some systems
            try pki.ca.issue(role: .coordinator, name: "c1")
            try await Task.sleep(for: .milliseconds(2600)) // the watcher looks every 2 s
            let after = try await RawClient.connect(port: p, tls: try RawClient.tls(pki, role: .node, name: "gw-0"))
            try await after.send([.hello(name: "gw-0")])
            await after.wait { after.frames().contains { $0.kind == "hello_ack" } }
            let newCert = try await after.serverCertificate()
            #expect(oldCert != nil && newCert != nil && oldCert != newCert, "new connections get the new certificate")
            try await before.send([.heartbeat(7, reply: false)])
            await before.wait { before.frames().contains { $0.kind == "heartbeat" } }
            #expect(!before.isClosed, "the old connection carries on")
            before.close()
            after.close()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test("a dead coordinator: the node keeps spending what it holds, then follows the fail mode, and reconnects")
    func deadCoordinator() async throws {
        let pki = try TestPKI(nodes: 1)
        defer { pki.remove() }
        let budget = try BudgetSpec(id: "q", unit: .requests, kind: .quota(allowance: 100_000, window: try CalendarWindow(.day)))
        var settings = CoordinatorCore.Settings()
        settings.allocator.leaseTTL = .seconds(2)
        settings.allocator.refreshInterval = .milliseconds(500)
        let first = try await RunningCoordinator.start(pki: pki, budgets: [budget], settings: settings)
        var es = EnforcerSettings(node: "gw-0")
        es.leaseTTL = .seconds(2)
        es.renewMargin = .milliseconds(600)
        let enforcer = try SharedEnforcer(settings: es)
        let set = BudgetSet(enforcer.register(budget))
        var cs = LeaseClient.Settings()
        cs.maxBackoff = .milliseconds(200)
        let client = LeaseClient(enforcer: enforcer,
                                 transport: TLSLeaseTransport(host: "127.0.0.1", port: first.port, tls: try pki.material(.node, "gw-0"), group: testGroup),
                                 settings: cs, logger: quietLogger("n"))
        let runner = Task { await client.run() }
        for _ in 0..<100 where !enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted {
            try await Task.sleep(for: .milliseconds(20))
        }
        try await first.server.shutdown()
        // No per-request round trip: admits keep succeeding from the slice it holds.
        #expect(enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted)
        // After the lease ends, the closed fail mode denies.
        try await Task.sleep(for: .milliseconds(2200))
        #expect(!enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted)
        #expect(!client.isConnected)
        #expect(client.traffic.connectFailures > 0, "it keeps trying to reconnect with backoff")
        runner.cancel()
        await runner.value
    }
}

@Suite("Lease client as a service")
struct LeaseClientServiceTests {
    @Test("graceful shutdown of a ServiceGroup releases the node's leases")
    func gracefulShutdown() async throws {
        let budget = try BudgetSpec(id: "q", unit: .requests, kind: .quota(allowance: 10_000, window: try CalendarWindow(.day)))
        let core = try CoordinatorCore(settings: .init(), budgets: [budget], now: WallClock.now())
        let enforcer = try SharedEnforcer(settings: EnforcerSettings(node: "gw-0"))
        let set = BudgetSet(enforcer.register(budget))
        let client = LeaseClient(enforcer: enforcer,
                                 transport: InProcessTransport(core: core, identity: try PeerIdentity(trustDomain: "t", role: .node, name: "gw-0")),
                                 logger: quietLogger("n"))
        let group = ServiceGroup(services: [client], logger: quietLogger("g"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for _ in 0..<100 where !enforcer.admit(.oneRequest, on: set, now: WallClock.now()).isAdmitted {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(core.allocatorStatus("q")!.outstanding > 0)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        let st = try #require(core.allocatorStatus("q"))
        #expect(st.outstanding == 0 && st.holders == 0)
        #expect(st.pool + st.consumed == 10_000)
    }
}
