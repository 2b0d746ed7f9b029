import AllotCore
import AllotSimulator
import Testing

/// The issue's "must show" at fleet scale: 16 nodes, 1,000 requests per second each.
@Suite("Fleet of 16: utilization and messages")
struct FleetTests {
    static let seeds: [UInt64] = [1, 2, 3]

    func run(_ name: Scenario.Name, seed: UInt64, _ strategies: [StrategyName] = [.allot]) -> SimulationReport {
        Simulation.run(Scenario(name, nodes: 16, seed: seed), strategies: strategies)
    }

    @Test("utilization: contention and zipf ≥ 0.97, shift ≥ 0.95, lossy ≥ 0.93", arguments: seeds)
    func utilization(seed: UInt64) throws {
        for (name, floor) in [(Scenario.Name.contention, 0.97), (.zipf, 0.97), (.shift, 0.95), (.lossy, 0.93)] {
            let m = try #require(run(name, seed: seed).metrics(.allot))
            #expect(m.utilization >= floor, "\(name) seed \(seed): utilization \(m.utilization)")
            #expect(m.overshoot == 0 && m.conformant, "\(name) seed \(seed)")
        }
    }

    @Test("at 1,000 requests/s per node, at most 5 coordinator messages per 1,000 requests", arguments: seeds)
    func messages(seed: UInt64) throws {
        for name in [Scenario.Name.steady, .contention, .lossy] {
            let m = try #require(run(name, seed: seed).metrics(.allot))
            #expect(m.messagesPer1k <= 5, "\(name) seed \(seed): \(m.messagesPer1k) messages per 1k")
        }
    }

    @Test("max-min fairness under contention: Jain's index ≥ 0.95")
    func fairness() throws {
        let m = try #require(run(.contention, seed: 1).metrics(.allot))
        #expect(m.fairness >= 0.95)
    }
}

/// The peers' known failure modes, reproduced on the same traces rather than assumed.
@Suite("Peers fail where they are known to fail")
struct PeerTests {
    @Test("post-paid and estimate-reserve overshoot with LLM-like token traffic; allot does not")
    func tokens() throws {
        let r = Simulation.run(Scenario(.tokens, nodes: 16, seed: 1), strategies: [.allot, .postPaid, .estimateReserve])
        let allot = try #require(r.metrics(.allot))
        let postPaid = try #require(r.metrics(.postPaid))
        let estimate = try #require(r.metrics(.estimateReserve))
        #expect(allot.overshoot == 0 && allot.conformant)
        #expect(postPaid.overshoot > 0)
        #expect(estimate.overshoot > 0)
        // Its window opened by the first request lets ~2× the per-minute limit through in a
        // rolling minute when a burst straddles the window boundary.
        #expect(estimate.peakRollingRatio >= 1.6)
        #expect(allot.peakRollingRatio <= 1.5) // burst + rate·T with a 30 s burst
    }

    @Test("estimate-reserve admits more than its own limit when text tokenizes densely, not for English")
    func density() throws {
        func excess(_ text: Scenario.TextMix) throws -> Double {
            let sc = Scenario(.tokens, nodes: 16, seed: 1, textMix: text, pattern: .steady)
            let m = try #require(Simulation.run(sc, strategies: [.estimateReserve]).metrics(.estimateReserve))
            return try #require(m.ownWindowExcess)
        }
        #expect(try excess(.dense) > 0)
        #expect(try excess(.english) <= 0)
    }

    @Test("periodic-sync overshoots in bursts; allot does not")
    func burst() throws {
        let r = Simulation.run(Scenario(.burst, nodes: 16, seed: 1), strategies: [.allot, .periodicSync])
        #expect(try #require(r.metrics(.periodicSync)).overshoot > 0)
        #expect(try #require(r.metrics(.allot)).overshoot == 0)
    }

    @Test("static-split wastes the cold nodes' share under skew")
    func zipf() throws {
        let r = Simulation.run(Scenario(.zipf, nodes: 16, seed: 1), strategies: [.allot, .staticSplit])
        let allot = try #require(r.metrics(.allot))
        let split = try #require(r.metrics(.staticSplit))
        #expect(split.utilization < allot.utilization - 0.1)
        #expect(split.overshoot == 0)
    }

    @Test("central is exact but pays two messages per request")
    func central() throws {
        let r = Simulation.run(Scenario(.contention, nodes: 16, seed: 1, duration: .seconds(10)), strategies: [.allot, .central])
        let central = try #require(r.metrics(.central))
        #expect(central.overshoot == 0 && central.conformant)
        #expect(central.messagesPer1k >= 2000)
        #expect(try #require(r.metrics(.allot)).messagesPer1k < central.messagesPer1k / 100)
    }
}

@Suite("Simulator")
struct SimulatorTests {
    @Test("the same seed gives the same run; another seed another")
    func deterministic() {
        let a = Simulation.run(Scenario(.lossy, nodes: 8, seed: 42, duration: .seconds(5)))
        let b = Simulation.run(Scenario(.lossy, nodes: 8, seed: 42, duration: .seconds(5)))
        let c = Simulation.run(Scenario(.lossy, nodes: 8, seed: 43, duration: .seconds(5)))
        #expect(a.json == b.json)
        #expect(a.json != c.json)
    }

    @Test("the JSON report has the documented keys")
    func json() {
        let r = Simulation.run(Scenario(.steady, nodes: 2, seed: 1, duration: .seconds(1)), strategies: [.allot, .central])
        for key in ["\"scenario\":\"steady\"", "\"nodes\":2", "\"seed\":1", "\"strategies\":[", "\"name\":\"allot\"",
                    "\"overshoot\":", "\"utilization\":", "\"fairness\":", "\"messages_per_1k\":", "\"false_deny_rate\":"] {
            #expect(r.json.contains(key), "missing \(key)")
        }
    }

    @Test("the checker can fail: exact central conforms, periodic-sync on the same trace does not")
    func checkerCanFail() {
        let sc = Scenario(.contention, nodes: 4, seed: 3, duration: .seconds(3))
        let exact = Simulation.run(sc, strategies: [.central]).strategies[0]
        #expect(exact.conformant && exact.overshoot == 0)
        let sync = Simulation.run(sc, strategies: [.periodicSync]).strategies[0]
        #expect(!sync.conformant)
    }

    @Test("regions: the hierarchy holds the global quota exactly, decides locally, and crosses regions least")
    func regions() {
        // Two regions of three gateways, 60 ± 20 ms apart, the global coordinator (or the
        // central counter) beside the first; demand moves from the first to the second halfway.
        let r = Simulation.run(Scenario(.regions, seed: 1, duration: .seconds(20), perNodeRate: 500),
                               strategies: [.allot, .allotRegions, .central, .staticSplit, .periodicSync])
        print(r.table)
        let hier = r.metrics(.allotRegions)!, flat = r.metrics(.allot)!, central = r.metrics(.central)!
        #expect(r.nodes == 6)
        #expect(hier.overshoot == 0 && hier.conformant, "\(hier.invariantViolation ?? "admissions over the quota")")
        #expect(hier.utilization >= 0.95)
        // No request waits on the cross-region link; a central counter makes the far region's wait a round trip.
        #expect(hier.decisionWaitP99Ms == 0)
        #expect(central.decisionWaitP99Ms >= 80)
        // Only the regions' coordinators cross regions, at their slower refresh.
        #expect(hier.crossRegionPer1k! < flat.crossRegionPer1k!)
        #expect(hier.crossRegionPer1k! * 100 < central.crossRegionPer1k!)
        // Every unit in its place: the hierarchy denies less than a static split of the quota.
        #expect(hier.falseDenyRate < r.metrics(.staticSplit)!.falseDenyRate)
    }
}
