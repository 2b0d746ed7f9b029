// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "allot",
    products: [
        .library(name: "AllotCore", targets: ["AllotCore"]),
        .library(name: "AllotSimulator", targets: ["AllotSimulator"]),
        .library(name: "AllotWire", targets: ["AllotWire"]),
        .library(name: "AllotTransport", targets: ["AllotTransport"]),
        .library(name: "AllotCoordinator", targets: ["AllotCoordinator"]),
        .library(name: "AllotNode", targets: ["AllotNode"]),
        .library(name: "AllotGateway", targets: ["AllotGateway"]),
        .library(name: "AllotCluster", targets: ["AllotCluster"]),
        .library(name: "AllotCoordination", targets: ["AllotCoordination"]),
        .library(name: "AllotConfig", targets: ["AllotConfig"]),
        .library(name: "AllotRateLimit", targets: ["AllotRateLimit"]),
        .library(name: "AllotTelemetry", targets: ["AllotTelemetry"]),
        .executable(name: "allot", targets: ["allot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // Envoy's rate-limit service (gRPC, `allot ratelimit-service`).
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        // Tracing (OTLP/HTTP only: the gRPC exporter is not built) and swift-metrics.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // Tests only: a gzip-compressing test upstream.
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
    ],
    targets: [
        // The lease engine: model, allocator, enforcer. Pure Swift, no I/O, no NIO.
        .target(name: "AllotCore"),
        // The deployment file's shared sections (tls, lease, budgets, tiers), every key of it,
        // and its field parsers: read by the coordinator and the gateway alike.
        .target(
            name: "AllotConfig",
            dependencies: ["AllotCore", .product(name: "Yams", package: "Yams"), .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Deterministic fleet simulator in virtual time, with the peers' strategies.
        .target(name: "AllotSimulator", dependencies: ["AllotCore", "AllotCoordination"]),
        // The wire format: protobuf messages (generated from Protos/), framing, codec.
        .target(
            name: "AllotWire",
            dependencies: [
                "AllotCore", "AllotCluster",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Mutual TLS over NIO: certificates (issuing and loading), SPIFFE identities.
        .target(
            name: "AllotTransport",
            dependencies: [
                "AllotWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The coordinator service: serves the allocator over the transport, gossips with the
        // other coordinators, writes durable grants ahead to the ledger (SQLite or PostgreSQL).
        .target(
            name: "AllotCoordinator",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotWire", "AllotTransport", "AllotCluster", "AllotCoordination",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // The node library a gateway embeds: local enforcement, background lease client.
        .target(
            name: "AllotNode",
            dependencies: [
                "AllotCore", "AllotCluster", "AllotWire", "AllotTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The AI gateway: identity, entitlements, reserve/settle around an OpenAI-compatible
        // upstream, the sidecar API, the audit trail.
        .target(
            name: "AllotGateway",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotWire", "AllotTransport", "AllotNode",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Envoy's rate-limit service answered from local leases: envoyproxy/ratelimit's
        // configuration format, the vendored RLS protos (generated code in Generated/), the
        // gRPC server.
        .target(
            name: "AllotRateLimit",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotNode", "AllotTransport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Tooling: the mock upstream and the demo (a local fleet of coordinators and gateways,
        // caps checked with the simulator's exact replay).
        .target(
            name: "AllotDemo",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotTransport", "AllotCoordinator", "AllotNode", "AllotGateway", "AllotSimulator",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // Tooling: test and rig support — a coordinator called in-process, a faulty link inside
        // the transport, a fault-injecting TCP proxy. No product module imports it.
        .target(
            name: "AllotTesting",
            dependencies: [
                "AllotCore", "AllotWire", "AllotTransport", "AllotCoordinator",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Process telemetry: the OTLP tracer (swift-otel, off unless asked for) and swift-metrics
        // bootstrapped onto a process's Prometheus registry.
        .target(
            name: "AllotTelemetry",
            dependencies: [
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The coordinator cluster: SWIM membership and rendezvous ownership, pure state machines.
        .target(name: "AllotCluster", dependencies: ["AllotCore"]),
        // The coordinator's decisions as a pure state machine (ownership, durable grants, tier
        // budgets, node restarts, a region's upstream): events and the time in, actions out.
        .target(name: "AllotCoordination", dependencies: ["AllotCore", "AllotCluster"]),
        // The command-line tool: a thin shell.
        .executableTarget(
            name: "allot",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotSimulator", "AllotTransport", "AllotCoordinator", "AllotNode", "AllotGateway", "AllotDemo", "AllotTesting",
                "AllotRateLimit", "AllotTelemetry",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Tooling: the seeded random-frame fuzzer of the coordinator's input path (scripts/fuzz.sh).
        .target(
            name: "AllotFuzzing",
            dependencies: [
                "AllotCore", "AllotCluster", "AllotWire", "AllotTransport", "AllotCoordinator",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "allot-fuzz", dependencies: ["AllotFuzzing"]),
        // Tooling: the benchmark drivers (a node replaying a trace beside Redis-backed peers,
        // coordinator scaling), with their Redis client. Not in the `allot` product.
        .executableTarget(
            name: "allot-bench",
            dependencies: [
                "AllotCore", "AllotConfig", "AllotSimulator", "AllotWire", "AllotTransport", "AllotCoordinator", "AllotNode",
                "AllotRateLimit", "AllotTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ]
        ),
        .testTarget(name: "AllotCoreTests", dependencies: ["AllotCore"]),
        .testTarget(name: "AllotSimulatorTests", dependencies: ["AllotCore", "AllotSimulator"]),
        .testTarget(name: "AllotClusterTests", dependencies: ["AllotCore", "AllotCluster"]),
        .testTarget(name: "AllotCoordinationTests", dependencies: ["AllotCore", "AllotCluster", "AllotConfig", "AllotCoordination", "AllotSimulator"]),
        .testTarget(
            name: "AllotCoordinatorTests",
            dependencies: [
                "AllotCore", "AllotCluster", "AllotConfig", "AllotWire", "AllotTransport", "AllotCoordination", "AllotCoordinator", "AllotNode", "AllotSimulator", "AllotFuzzing", "AllotTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "AllotGatewayTests",
            dependencies: [
                "AllotGateway", "AllotDemo", "AllotConfig", "AllotCore", "AllotCoordinator", "AllotNode", "AllotTransport", "AllotSimulator",
                "AllotTelemetry",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // Recorded-shape upstream answers, read from the source tree (FixtureUpstream).
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "AllotRateLimitTests",
            dependencies: [
                "AllotRateLimit", "AllotCore", "AllotConfig", "AllotCoordination", "AllotCoordinator", "AllotNode", "AllotTransport", "AllotTesting",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "AllotWireTests",
            dependencies: [
                "AllotWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "AllotNetworkTests",
            dependencies: [
                "AllotCore", "AllotCluster", "AllotConfig", "AllotWire", "AllotTransport", "AllotCoordinator", "AllotNode", "AllotSimulator", "AllotDemo", "AllotTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
