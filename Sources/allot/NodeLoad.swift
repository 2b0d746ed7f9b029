import AllotConfig
import AllotCoordinator
import AllotCore
import AllotNode
import AllotTransport
import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOPosix
import Synchronization

struct NodeLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-load",
        abstract: "Run one gateway node that hammers budgets through the node library; print what it admitted as JSON.",
        discussion: "SIGTERM stops it gracefully: its leases are released before it exits.")

    @Option(help: "The coordinator's YAML configuration (for the budgets' definitions).") var config: String
    @Option(help: "The coordinator, HOST:PORT (a cluster: several, comma-separated).") var coordinator: String
    @Option(help: "Directory with ca.pem, trust-domain and node-<name>.pem.") var tlsDir: String
    @Option(help: "This node's name (its certificate is node-<name>.pem).") var name: String
    @Option(help: "Budgets each request is charged to (repeatable; default: all in the configuration).") var budget: [String] = []
    @Option(help: "Requests per second offered.") var rate = 1000
    @Option(help: "Seconds to run.") var seconds = 10.0
    @Option(help: "Log level on standard error: trace (every grant), debug, info, notice, warning, error, critical.") var logLevel: Logger.Level = .warning
    @Flag(help: "Charge each request to one budget at a time, round robin (default: to all of them at once); the JSON then counts admissions per budget.")
    var each = false
    @Option(help: "Write every admission as `budget nanoseconds` lines to this file (for exact interval checks).")
    var trace: String?
    @Option(help: "Phases of offered load, RATExSECONDS comma-separated (e.g. 300x8,20x8); replaces --rate and --seconds.")
    var schedule: String?

    /// (rate, seconds) phases.
    func phases() throws -> [(rate: Int, seconds: Double)] {
        guard let schedule else { return [(rate, seconds)] }
        return try schedule.split(separator: ",").map { part in
            let p = part.split(separator: "x")
            guard p.count == 2, let r = Int(p[0]), r >= 0, let s = Double(p[1]), s > 0 else {
                throw ValidationError("--schedule must be RATExSECONDS[,RATExSECONDS…] such as 300x8,20x8 (got '\(part)')")
            }
            return (r, s)
        }
    }

    func run() async throws {
        let cfg = try CoordinatorConfig.load(path: config)
        let seeds = coordinator.split(separator: ",").map(String.init)
        for a in seeds where (try? ConfigFields.address(a, field: "--coordinator")) == nil {
            throw ValidationError("--coordinator must be HOST:PORT[,HOST:PORT…] (got '\(coordinator)')")
        }
        let catalog = try TierCatalog(cfg.tiers)
        let specs = budget.isEmpty ? cfg.budgets : try budget.map { id in
            guard let s = cfg.budgets.first(where: { $0.id.rawValue == id }) ?? catalog.instantiate(BudgetID(id)) else {
                throw ValidationError("budget '\(id)' is neither in \(config)'s budgets nor tier.template/key of its tiers")
            }
            return s
        }
        var settings = EnforcerSettings(node: NodeID(name))
        settings.leaseTTL = cfg.core.allocator.leaseTTL
        settings.refreshInterval = cfg.core.allocator.refreshInterval
        settings.renewMargin = min(settings.renewMargin, cfg.core.allocator.leaseTTL / 3)
        let enforcer = try SharedEnforcer(settings: settings)
        // One request charged to all of them (at most BudgetSet's limit), or to each in turn.
        let handles = specs.map { enforcer.register($0) }
        let set = try BudgetSet(each ? [handles[0]] : handles)
        let dir = URL(fileURLWithPath: tlsDir), nodeName = name
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .node, name: nodeName) }
        var logger = Logger(label: "allot.node")
        logger.logLevel = logLevel
        let client = LeaseClient(enforcer: enforcer, seeds: seeds, logger: logger,
                                 dial: TLSLeaseTransport.dialer(tls: tls, group: MultiThreadedEventLoopGroup.singleton))
        let stop = StopFlag()
        signal(SIGTERM, SIG_IGN)
        let term = DispatchSource.makeSignalSource(signal: SIGTERM)
        term.setEventHandler { stop.set() }
        term.resume()

        let phases = try phases()
        let runner = Task { await client.run() }
        let started = WallClock.now()
        var phaseEnds: [Instant] = []
        var t = started
        for p in phases {
            t = t + .milliseconds(Int64(p.seconds * 1000))
            phaseEnds.append(t)
        }
        let deadline = t
        // How long each admission decision took (the request path's whole cost here).
        var decisions: [Int64] = []
        var admitted = 0, attempts = 0
        var first: Int64 = 0, last: Int64 = 0
        var perBudget = [Int](repeating: 0, count: specs.count)
        var traceLines: [String] = []
        let singles = specs.map { BudgetSet(enforcer.register($0)) }
        var offeredInPhase = 0
        var phase = 0
        while !stop.isSet && WallClock.now() < deadline {
            let tickNow = WallClock.now()
            while phase < phases.count - 1 && tickNow >= phaseEnds[phase] {
                phase += 1
                offeredInPhase = 0
            }
            // Paced by elapsed time in the phase, so a slow tick does not lower the rate.
            let phaseStart = phase == 0 ? started : phaseEnds[phase - 1]
            let due = Int(Double(phases[phase].rate) * Double((tickNow - phaseStart).nanoseconds) / 1e9) - offeredInPhase
            for _ in 0..<max(0, due) {
                offeredInPhase += 1
                let now = WallClock.now()
                let index = each ? attempts % specs.count : 0
                attempts += 1
                let decision = enforcer.admit(.oneRequest, on: each ? singles[index] : set, now: now)
                decisions.append((WallClock.now() - now).nanoseconds)
                if decision.isAdmitted {
                    admitted += 1
                    if each {
                        perBudget[index] += 1
                        if trace != nil { traceLines.append("\(specs[index].id) \(now.nanoseconds)") }
                    }
                    if first == 0 { first = now.nanoseconds }
                    last = now.nanoseconds
                }
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
        runner.cancel()
        await runner.value // releases every lease
        if let trace { try traceLines.joined(separator: "\n").write(toFile: trace, atomically: true, encoding: .utf8) }
        let wait = enforcer.withEnforcer { $0.longestAnswerWait }
        let budgets = each ? ",\"budgets\":{" + zip(specs, perBudget).map { "\"\($0.id)\":\($1)" }.joined(separator: ",") + "}" : ""
        decisions.sort()
        func percentile(_ q: Double) -> Int64 { decisions.isEmpty ? 0 : decisions[min(decisions.count - 1, Int(Double(decisions.count) * q))] }
        let latency = ",\"decision_us\":{\"p50\":\(Double(percentile(0.5)) / 1000),\"p99\":\(Double(percentile(0.99)) / 1000),\"max\":\(Double(decisions.last ?? 0) / 1000)}"
        let tr = client.traffic
        let line = ("{\"node\":\"\(name)\",\"admitted\":\(admitted),\"attempts\":\(attempts),\"first_ns\":\(first),\"last_ns\":\(last),\"frames\":\(tr.framesSent + tr.framesReceived),\"longest_answer_ms\":\(wait.nanoseconds / 1_000_000),\"stopped\":\(stop.isSet)\(budgets)\(latency)}\n")
        FileHandle.standardOutput.write(Data(line.utf8))
    }
}

final class StopFlag: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}
