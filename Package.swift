// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "allot",
    products: [
        .library(name: "AllotCore", targets: ["AllotCore"]),
        .library(name: "AllotSimulator", targets: ["AllotSimulator"]),
        .executable(name: "allot", targets: ["allot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // The lease engine: model, allocator, enforcer. Pure Swift, no I/O, no NIO.
        .target(name: "AllotCore"),
        // Deterministic fleet simulator in virtual time, with the peers' strategies.
        .target(name: "AllotSimulator", dependencies: ["AllotCore"]),
        // The command-line tool: a thin shell.
        .executableTarget(
            name: "allot",
            dependencies: [
                "AllotCore", "AllotSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "AllotCoreTests", dependencies: ["AllotCore"]),
        .testTarget(name: "AllotSimulatorTests", dependencies: ["AllotCore", "AllotSimulator"]),
    ],
    swiftLanguageModes: [.v6]
)
