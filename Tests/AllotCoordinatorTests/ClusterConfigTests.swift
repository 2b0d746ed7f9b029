import AllotCore
import AllotCoordinator
import AllotTransport
import Foundation
import Logging
import Testing

/// The cluster and ledger sections of the configuration: what they accept, and the errors
/// that name what is wrong.
@Suite("Cluster configuration")
struct ClusterConfigTests {
    static let base = """
    coordinator: {name: c0, listen: 127.0.0.1:7400}
    budgets:
      - {id: q, kind: quota, allowance: 100, window: day}

    """

    @Test("cluster, quorum and ledger are read; the quorum defaults to a majority of the members (the seeds when not listed)")
    func accepted() throws {
        let cfg = try CoordinatorConfig(yaml: Self.base + """
        cluster: {seeds: [127.0.0.1:7400, 127.0.0.1:7402, 127.0.0.1:7404], protocol_period: 500ms, suspicion_timeout: 2s}
        ledger: postgres://allot@db:5432/quota
        """)
        #expect(cfg.cluster?.seeds.count == 3)
        #expect(cfg.cluster?.membership.protocolPeriod == .milliseconds(500))
        #expect(cfg.quorum == 2)
        #expect(cfg.ledger == .postgres(.init(host: "db", user: "allot", database: "quota")))
        // Two coordinators: both are needed (one alone could be the minority of a split).
        let two = try CoordinatorConfig(yaml: Self.base + "cluster: {seeds: [a:1, b:2]}\nledger: sqlite:x.db\n")
        #expect(two.quorum == 2)
        // Five coordinators, two of them seeds: a majority of the five.
        let five = try CoordinatorConfig(yaml: Self.base + "cluster: {seeds: [a:1, b:2], members: [a:1, b:2, c:3, d:4, e:5]}\nledger: sqlite:x.db\n")
        #expect(five.quorum == 3 && five.cluster?.members.count == 5)
    }

    @Test("bad cluster and ledger settings are refused, naming the field")
    func refused() {
        let cases: [(String, String)] = [
            ("cluster: {seeds: [nowhere]}", "cluster.seeds[0]"),
            ("cluster: {seeds: [a:1], gossip_port: 7}", "cluster.gossip_port"),
            ("cluster: {seeds: [a:1, b:2, c:3], quorum: 4}", "cluster.quorum"),
            ("cluster: {seeds: [a:1], members: [a:1, b:2, c:3, d:4], quorum: 2}", "cluster.quorum"),
            ("cluster: {seeds: [a:1], members: [a:1, nowhere]}", "cluster.members[1]"),
            ("cluster: {seeds: [a:1], protocol_period: 100ms, ping_timeout: 200ms}", "cluster.ping_timeout"),
            ("cluster: {seeds: [a:1], suspicion_timeout: soon}", "cluster.suspicion_timeout"),
            ("ledger: mysql://x", "ledger"),
            ("ledger: 'sqlite:'", "ledger"),
        ]
        for (yaml, field) in cases {
            do {
                _ = try CoordinatorConfig(yaml: Self.base + yaml + "\n")
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(field), "\(yaml): \(error)")
            }
        }
    }

    @Test("cluster mode with quota budgets and no ledger is refused, and so is a cluster without a fixed port")
    func needsLedger() throws {
        let noLedger = try CoordinatorConfig(yaml: Self.base + "cluster: {seeds: [127.0.0.1:7400]}\n")
        #expect(throws: AllotError.self) { try CoordinatorService.makeCore(config: noLedger, logger: quietLogger("c"), now: WallClock.now()) }
        do { _ = try CoordinatorService.makeCore(config: noLedger, logger: quietLogger("c"), now: WallClock.now()) } catch {
            #expect("\(error)".contains("needs a ledger"))
        }
        var anyPort = try CoordinatorConfig(yaml: Self.base + "cluster: {seeds: [127.0.0.1:7400]}\nledger: sqlite:\(tempPath("l.db"))\n")
        anyPort.listenPort = 0
        do { _ = try CoordinatorService.makeCore(config: anyPort, logger: quietLogger("c"), now: WallClock.now()) } catch {
            #expect("\(error)".contains("fixed port"))
        }
    }
}

@Suite("Default ledger")
struct DefaultLedgerTests {
    @Test("a configuration file with quota budgets gets a SQLite ledger beside it; `ledger: none` or no quotas, none")
    func defaultLedger() throws {
        let dir = URL(fileURLWithPath: tempPath("x")).deletingLastPathComponent()
        let file = dir.appendingPathComponent("allot.yaml")
        try ClusterConfigTests.base.write(to: file, atomically: true, encoding: .utf8)
        #expect(try CoordinatorConfig.load(path: file.path).ledger == .sqlite(path: dir.appendingPathComponent("allot-ledger.db").path))
        try (ClusterConfigTests.base + "ledger: none\n").write(to: file, atomically: true, encoding: .utf8)
        #expect(try CoordinatorConfig.load(path: file.path).ledger == LedgerLocation.none)
        try "budgets:\n  - {id: r, kind: rate, limit: 10}\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try CoordinatorConfig.load(path: file.path).ledger == LedgerLocation.none)
    }
}
