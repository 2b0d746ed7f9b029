import AllotCore
import AllotWire
import Benchmark
import NIOCore
import Dispatch

/// An enforcer holding a rate lease far larger than any benchmark can spend, so every
/// admit succeeds and only the decision itself is measured.
func leasedEnforcer(budgets: Int) -> (Enforcer, BudgetSet) {
    var e = try! Enforcer(settings: EnforcerSettings(node: "bench"))
    var handles: [BudgetHandle] = []
    for i in 0..<budgets {
        let spec = try! BudgetSpec(id: BudgetID("b\(i)"), unit: .tokens,
                                   kind: .rate(limit: 1 << 40, period: .seconds(1), burst: 1 << 50))
        handles.append(e.register(spec))
    }
    let set = try! BudgetSet(handles)
    _ = e.admit(Cost(tokens: 1), on: set, now: .zero)
    for case .acquire(let req) in e.poll(now: .zero) {
        _ = e.receive(Grant(requestID: req.requestID, budget: req.budget, leaseID: 1, epoch: 1, amount: 1 << 50,
                            ttl: .seconds(1_000_000), rate: 1 << 40, capacity: 1 << 50, sequence: 1), now: .zero)
    }
    return (e, set)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        maxDuration: .seconds(3), maxIterations: 10_000_000)

    Benchmark("admit, 1 budget", configuration: .init(scalingFactor: .mega)) { benchmark in
        var (e, set) = leasedEnforcer(budgets: 1)
        var t: Int64 = 1
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            t &+= 1
            blackHole(e.admit(Cost(tokens: 1), on: set, now: Instant(nanoseconds: t)).isAdmitted)
        }
    }

    Benchmark("admit, 4 budgets all-or-nothing", configuration: .init(scalingFactor: .mega)) { benchmark in
        var (e, set) = leasedEnforcer(budgets: 4)
        var t: Int64 = 1
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            t &+= 1
            blackHole(e.admit(Cost(tokens: 1), on: set, now: Instant(nanoseconds: t)).isAdmitted)
        }
    }

    Benchmark("reserve + settle, 1 budget", configuration: .init(scalingFactor: .mega)) { benchmark in
        var (e, set) = leasedEnforcer(budgets: 1)
        var t: Int64 = 1
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            t &+= 1
            let now = Instant(nanoseconds: t)
            if case .admitted(let r) = e.reserve(Cost(tokens: 4000), on: set, now: now) {
                e.settle(r, actual: Cost(tokens: 1300), now: now)
            }
        }
    }

    Benchmark("shared admit, 1 thread", configuration: .init(scalingFactor: .mega)) { benchmark in
        let (e0, set) = leasedEnforcer(budgets: 1)
        let shared = try! SharedEnforcer(settings: EnforcerSettings(node: "bench"))
        shared.withEnforcer { $0 = e0 }
        let clock = ContinuousClock()
        let start = clock.now
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let now = Instant(nanoseconds: (clock.now - start).nanoseconds + 1)
            blackHole(shared.admit(Cost(tokens: 1), on: set, now: now).isAdmitted)
        }
    }

    Benchmark("shared admit, 2 threads on one budget", configuration: .init(scalingFactor: .mega)) { benchmark in
        let (e0, set) = leasedEnforcer(budgets: 1)
        let shared = try! SharedEnforcer(settings: EnforcerSettings(node: "bench"))
        shared.withEnforcer { $0 = e0 }
        let clock = ContinuousClock()
        let start = clock.now
        let perThread = benchmark.scaledIterations.count / 2
        benchmark.startMeasurement()
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            for _ in 0..<perThread {
                let now = Instant(nanoseconds: (clock.now - start).nanoseconds + 1)
                blackHole(shared.admit(Cost(tokens: 1), on: set, now: now).isAdmitted)
            }
        }
    }

    Benchmark("allocator acquire, 16 nodes", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let spec = try! BudgetSpec(id: "r", unit: .tokens, kind: .rate(limit: 1_000_000, period: .seconds(1), burst: 1_000_000))
        var a = try! Allocator(budgets: [spec], now: .zero)
        var ids = [UInt64](repeating: 0, count: 16)
        let nodes = (0..<16).map { NodeID("n\($0)") }
        var t: Int64 = 1
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let n = i % 16
            ids[n] += 1
            t += 1_000
            let req = AcquireRequest(requestID: ids[n], node: nodes[n], budget: "r", want: 70_000, demandRate: 70_000)
            blackHole(a.acquire(req, now: Instant(nanoseconds: t)))
            blackHole(a.takePushes())
        }
    }

    Benchmark("water-fill, 64 nodes", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let wants = (0..<64).map { Int64(($0 * 7919) % 1000 + 1) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(WaterFill.shares(capacity: 20_000, wants: wants))
        }
    }

    // The wire format: one frame of 100 acquires (a busy node's batch), encoded and decoded.
    let batch: Allot_V1_Frame = .acquire((0..<100).map {
        AcquireRequest(requestID: UInt64($0 + 1), node: "n", budget: BudgetID("tenant-\($0).tokens.day"), want: 5_000, demandRate: 4_000,
                       leaseID: 7, epoch: 1, consumed: 12_000, released: 300, holding: 2_000)
    })
    Benchmark("frame encode, 100 acquires", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var buffer = ByteBufferAllocator().buffer(capacity: 16_384)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            buffer.clear()
            try FrameEncoder.encode(batch, into: &buffer, maxFrameBytes: WireProtocol.defaultMaxFrameBytes)
            blackHole(buffer.readableBytes)
        }
    }

    Benchmark("frame decode, 100 acquires", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var encoded = ByteBufferAllocator().buffer(capacity: 16_384)
        try FrameEncoder.encode(batch, into: &encoded, maxFrameBytes: WireProtocol.defaultMaxFrameBytes)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var b = encoded
            blackHole(try FrameDecoder.decodeOne(&b, maxFrameBytes: WireProtocol.defaultMaxFrameBytes))
        }
    }
}
