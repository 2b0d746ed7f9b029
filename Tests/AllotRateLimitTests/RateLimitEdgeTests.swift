import AllotConfig
import AllotCore
import AllotNode
@testable import AllotRateLimit
import AllotTransport
import Foundation
import GRPCCore
import Logging
import SwiftProtobuf
import Testing

/// The wire, checked against bytes written by hand from Envoy's field numbers (not from our
/// own generated code), and the decisions at their edges.
@Suite("Envoy's rate-limit service: wire and edges", .serialized)
struct RateLimitEdgeTests {
    @Test("wire: a request encoded by hand from Envoy's rls.proto field numbers decodes; an answer encodes to the bytes Envoy's numbering gives")
    func goldenBytes() throws {
        // RateLimitRequest{domain(1)="rl", descriptors(2)=[{entries(1)=[{key(1)="k", value(2)="v"}],
        // limit(2)={requests_per_unit(1)=5, unit(2)=MINUTE(2)}}], hits_addend(3)=3}
        let entry: [UInt8] = [0x0a, 0x01, 0x6b, 0x12, 0x01, 0x76]
        let limit: [UInt8] = [0x08, 0x05, 0x10, 0x02]
        let descriptor: [UInt8] = [0x0a, UInt8(entry.count)] + entry + [0x12, UInt8(limit.count)] + limit
        let request: [UInt8] = [0x0a, 0x02, 0x72, 0x6c, 0x12, UInt8(descriptor.count)] + descriptor + [0x18, 0x03]
        let r = try Envoy_Service_Ratelimit_V3_RateLimitRequest(serializedBytes: request)
        #expect(r.domain == "rl" && r.hitsAddend == 3 && r.descriptors.count == 1)
        #expect(r.descriptors[0].entries.map { [$0.key, $0.value] } == [["k", "v"]])
        #expect(r.descriptors[0].limit.requestsPerUnit == 5 && r.descriptors[0].limit.unit == .minute)
        #expect(RateLimitGRPCService.override(r.descriptors[0]) == DescriptorRules.Limit(requestsPerUnit: 5, unit: .minute))
        // WEEK (7), added upstream after the vendored files: read as its number.
        let week = try Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor(serializedBytes: [0x12, 0x04, 0x08, 0x01, 0x10, 0x07])
        #expect(RateLimitGRPCService.override(week)?.unit == .week)
        // RateLimitResponse{overall_code(1)=OVER_LIMIT(2), statuses(2)=[{code(1)=OVER_LIMIT,
        // current_limit(2)={requests_per_unit(1)=1, unit(2)=MINUTE}, duration_until_reset(4)={seconds(1)=60}}]}
        var status = RateLimitCore.Status()
        status.overLimit = true
        status.limit = DescriptorRules.Limit(requestsPerUnit: 1, unit: .minute)
        status.untilReset = .seconds(60)
        let bytes: [UInt8] = try RateLimitGRPCService.response(RateLimitCore.Answer(statuses: [status]), headers: false).serializedBytes()
        let currentLimit: [UInt8] = [0x08, 0x01, 0x10, 0x02]
        let reset: [UInt8] = [0x08, 0x3c]
        let st: [UInt8] = [0x08, 0x02, 0x12, UInt8(currentLimit.count)] + currentLimit + [0x22, UInt8(reset.count)] + reset
        #expect(bytes == [0x08, 0x02, 0x12, UInt8(st.count)] + st, "\(bytes)")
    }

    static func core(_ rules: String, settings: RateLimitCore.Settings = RateLimitCore.Settings(), connected: Bool = true) throws -> RateLimitCore {
        let (domain, list) = try RateLimitRulesFile.parse(rules)
        var r = DescriptorRules()
        try r.add(domain: domain, rules: list)
        return RateLimitCore(rules: r, enforcer: try SharedEnforcer(settings: EnforcerSettings(node: "n")), settings: settings,
                             connected: { connected })
    }

    @Test("no coordinator reachable: a limited descriptor is over the limit at once, not after the wait (fail closed, as Envoy sees it)")
    func noCoordinator() async throws {
        var s = RateLimitCore.Settings()
        s.wait = .milliseconds(500)
        let core = try Self.core("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 10}\n", settings: s, connected: false)
        let start = ContinuousClock.now
        let a = await core.decide(domain: "d", descriptors: [.init(entries: [("a", "x")])], hits: 1)
        #expect(a.overLimit && ContinuousClock.now - start < .milliseconds(200))
    }

    @Test("real time: a refused request charges nothing, duplicates and shadow descriptors included; hits above the limit are refused at once; long values get a digest budget; past --max-budgets a new value is over the limit")
    func edges() async throws {
        let fleet = try await SidecarFleet.start(nodes: 1, rules: [Fixtures.example])
        defer { Task { await fleet.stop() } }
        let core = fleet.sidecars[0].core
        func decide(_ d: [[(String, String)]], hits: UInt32 = 1) async -> RateLimitCore.Answer {
            await core.decide(domain: "rl", descriptors: d.map { RateLimitCore.Descriptor(entries: $0.map { (key: $0.0, value: $0.1) }) }, hits: hits)
        }
        // foo=a: 2 per minute. [foo=a, foo=a, bar=banned-like refusal]: nothing charged.
        let a = [("foo", "a")], shady = [("foo", "a"), ("baz", "shady")], banned = [("foo", "a"), ("bar", "banned")]
        #expect(await decide([a, a, shady, banned]).overLimit)
        // [foo=a ×3] against 2 per minute: two sets reserved, the third refused, both given back.
        #expect(await decide([a, a, a]).overLimit)
        #expect(await decide([a, shady]).overLimit == false, "foo=a kept both its units; the shadow one was not charged before")
        #expect(core.counts.withLock { $0.shadowDenied } == 0)
        #expect(await decide([a]).overLimit == false)
        #expect(await decide([a]).overLimit, "2 per minute")
        // hits above the limit: over at once, nothing charged or asked for.
        let start = ContinuousClock.now
        #expect(await decide([[("foo", "b")]], hits: 3).overLimit)
        #expect(ContinuousClock.now - start < .milliseconds(5))
        #expect(await decide([[("foo", "b")]], hits: 2).overLimit == false)
        // A value too long for a budget id: a digest id the coordinator accepts.
        let long = [("foo", String(repeating: "é", count: 300))]
        #expect(await decide([long]).overLimit == false)
        #expect(await decide([long]).overLimit == false)
        #expect(await decide([long]).overLimit, "2 per minute under the digest id")
        #expect(fleet.core.allocatorStatus(RateLimitCore.budgetID(domain: "rl", entries: long.map { (key: $0.0, value: $0.1) },
                                                                  limit: .init(requestsPerUnit: 2, unit: .minute))) != nil)
        // --max-budgets: a sidecar that keeps at most 2.
        var s = RateLimitCore.Settings()
        s.maxBudgets = 2
        let small = try Self.core("domain: d\ndescriptors:\n  - key: ip\n    rate_limit: {unit: second, requests_per_unit: 10}\n", settings: s, connected: false)
        for ip in ["1", "2", "3"] { _ = await small.decide(domain: "d", descriptors: [.init(entries: [("ip", ip)])], hits: 1) }
        #expect(small.counts.withLock { $0.budgetsRefused } == 1 && small.enforcer.budgetIDs.count == 2)
    }
}
