import AllotDemo
import AllotCore
import AllotSimulator
import AllotWire
import ArgumentParser
import Logging

@main
struct Allot: AsyncParsableCommand {
    /// This build's version (`allot --version`), with the lease protocol's version it speaks.
    static let version = "0.9.0 (lease protocol \(WireProtocol.version))"

    static let configuration = CommandConfiguration(
        commandName: "allot",
        abstract: "Allot: fleet-wide quotas for AI gateways, enforced locally with expiring leases.",
        version: "allot \(version)",
        groupedSubcommands: [
            CommandGroup(name: "Serve", subcommands: [CoordinatorCommand.self, GatewayCommand.self, RateLimitCommand.self]),
            CommandGroup(name: "Operate", subcommands: [Status.self, ConfigCommand.self, Keys.self, Consumers.self, Certs.self, HashKey.self, Audit.self]),
            CommandGroup(name: "Tools (demos, simulation, test rigs)", subcommands: [
                Demo.self, Simulate.self, MockUpstreamCommand.self, NodeLoad.self, FaultProxyCommand.self,
            ]),
        ])
}

/// `--log-level`: one of trace, debug, info, notice, warning, error, critical; anything else
/// is refused by the parser with the list.
extension Logger.Level: @retroactive ExpressibleByArgument {}

extension Scenario.Name: ExpressibleByArgument {}
extension StrategyName: ExpressibleByArgument {}
extension Scenario.BudgetMix: ExpressibleByArgument {}
extension Scenario.TextMix: ExpressibleByArgument {}
extension Scenario.Pattern: ExpressibleByArgument {}

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run fleets in virtual time and compare Allot with the peers' approaches on the same trace.")

    @Option(name: .long, help: "Scenarios, comma-separated (\(Scenario.Name.allCases.map(\.rawValue).joined(separator: ", "))); default all.")
    var scenario: String?

    @Option(name: .long, help: "Strategies, comma-separated (\(StrategyName.allCases.map(\.rawValue).joined(separator: ", "))); default all.")
    var strategies: String?

    @Option(name: .long, help: "Gateway nodes (default 16; 6 for regions, three per region).")
    var nodes: Int?

    @Option(name: .long, help: "Random seed; the same seed gives the same run.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Virtual seconds to simulate (default 30, 150 for tokens).")
    var seconds: Double?

    @Option(name: .long, help: "Requests per second per node (default 1000, 20 for tokens).")
    var rate: Double?

    @Option(name: .long, help: "periodic-sync's reconcile interval in milliseconds.")
    var syncMs: Int = 100

    @Option(name: .long, help: "Budgets: primary (one, all strategies) or all (rate + quota + concurrency).")
    var mix: Scenario.BudgetMix = .primary

    @Option(name: .long, help: "tokens: prompt text, dense (code, JSON, CJK) or english.")
    var text: Scenario.TextMix = .dense

    @Option(name: .long, help: "tokens: demand pattern, bursty or steady.")
    var pattern: Scenario.Pattern = .bursty

    @Flag(name: .long, help: "Print one JSON object per scenario instead of a table.")
    var json = false

    func validate() throws {
        if let nodes, !(1...4096).contains(nodes) { throw ValidationError("--nodes must be between 1 and 4096 (got \(nodes))") }
        if let s = seconds, !(s > 0 && s <= 3600) { throw ValidationError("--seconds must be in (0, 3600] (got \(s))") }
        if let r = rate, !(r > 0 && r <= 1_000_000) { throw ValidationError("--rate must be in (0, 1e6] (got \(r))") }
        guard syncMs > 0 else { throw ValidationError("--sync-ms must be positive") }
        _ = try parsedScenarios()
        _ = try parsedStrategies()
    }

    func parsedScenarios() throws -> [Scenario.Name] {
        guard let scenario else { return Scenario.Name.allCases }
        return try scenario.split(separator: ",").map {
            guard let s = Scenario.Name(rawValue: String($0)) else {
                throw ValidationError("unknown scenario '\($0)'; use one of: \(Scenario.Name.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return s
        }
    }

    func parsedStrategies() throws -> [StrategyName] {
        guard let strategies else { return StrategyName.allCases }
        return try strategies.split(separator: ",").map {
            guard let s = StrategyName(rawValue: String($0)) else {
                throw ValidationError("unknown strategy '\($0)'; use one of: \(StrategyName.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return s
        }
    }

    func run() throws {
        for name in try parsedScenarios() {
            let sc = Scenario(name, nodes: nodes, seed: seed, duration: seconds.map { .milliseconds(Int64($0 * 1000)) },
                              perNodeRate: rate, mix: mix, textMix: text, pattern: pattern)
            let report = Simulation.run(sc, strategies: try parsedStrategies(), syncInterval: .milliseconds(syncMs))
            if json { print(report.json) } else { print(report.table + "\n") }
        }
    }
}
