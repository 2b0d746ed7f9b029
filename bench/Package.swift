// swift-tools-version:6.1
// Benchmarks live in their own package so the main build and `swift test` stay lean.
// Run: cd bench && swift package benchmark   (see docs/performance.md)
import PackageDescription

let package = Package(
    name: "allot-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "allot", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Step 2: grants per second over mTLS, handshake cost, admit cost with the client running.
        .executableTarget(
            name: "WireBench",
            dependencies: [
                .product(name: "AllotCore", package: "allot"),
                .product(name: "AllotTransport", package: "allot"),
                .product(name: "AllotCoordinator", package: "allot"),
                .product(name: "AllotNode", package: "allot"),
                .product(name: "AllotWire", package: "allot"),
            ],
            path: "Sources/WireBench"
        ),
        // Step 4: grants per second with 1-3 coordinators, failure detection, ledger group commit.
        .executableTarget(
            name: "ClusterBench",
            dependencies: [
                .product(name: "AllotCore", package: "allot"),
                .product(name: "AllotCluster", package: "allot"),
                .product(name: "AllotTransport", package: "allot"),
                .product(name: "AllotCoordinator", package: "allot"),
                .product(name: "AllotNode", package: "allot"),
                .product(name: "AllotWire", package: "allot"),
            ],
            path: "Sources/ClusterBench"
        ),
        .executableTarget(
            name: "LeaseEngine",
            dependencies: [
                .product(name: "AllotCore", package: "allot"),
                .product(name: "AllotWire", package: "allot"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/LeaseEngine",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
