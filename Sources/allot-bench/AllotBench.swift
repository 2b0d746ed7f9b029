import ArgumentParser

/// The benchmarks' own binary (bench/run.sh): not part of the `allot` product.
@main
struct AllotBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allot-bench",
        abstract: "Allot's benchmark drivers (bench/run.sh, bench/real/run.sh).",
        subcommands: [BenchNode.self, BenchScale.self, BenchRLS.self])
}
