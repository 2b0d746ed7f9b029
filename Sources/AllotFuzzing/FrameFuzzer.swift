import AllotCluster
import AllotCore
import AllotCoordinator
import AllotTransport
import AllotWire
import NIOCore

/// A seeded random-frame fuzzer for the coordinator's input path: bytes as a peer sends them,
/// through the frame decoder (size and item limits), the `Session` (roles, counts, refusals)
/// and `CoordinatorCore` (allocator, tier budgets, gossip, status pages), with every answer
/// encoded as the listener would. Virtual time; no I/O. A trap anywhere is the finding.
///
/// Inputs are mutations of a corpus (`FrameFuzzer.seedCorpus`, kept in `Tests/fuzz-corpus`):
/// bit flips, boundary values written over varints, truncations, splices and repeats.
public struct FrameFuzzer {
    private var rng: UInt64
    private var core: CoordinatorCore
    private var now = Instant(seconds: 1_000)
    private var fed = 0

    public init(seed: UInt64) throws {
        rng = seed | 1
        core = try Self.makeCore(now: now)
    }

    static func makeCore(now: Instant) throws -> CoordinatorCore {
        var s = CoordinatorCore.Settings()
        s.name = "c0"
        s.member = MemberID(name: "c0", address: "127.0.0.1:7000")
        s.maxFrameBytes = 64 << 10
        s.tierLimits.total = 2_000
        s.tiers = [try Tier(name: "pro", templates: [
            BudgetTemplate(name: "rpm", unit: .requests, kind: .rate(limit: 600, period: .seconds(60), burst: 600), scope: [.consumer]),
            BudgetTemplate(name: "day", unit: .tokens, kind: .quota(allowance: 1_000_000, window: try CalendarWindow(.day)), scope: [.consumer]),
            BudgetTemplate(name: "inflight", unit: .requests, kind: .concurrency(limit: 4), scope: [.consumer]),
        ])]
        let budgets = [
            try BudgetSpec(id: "r", unit: .requests, kind: .rate(limit: 1_000, period: .seconds(1), burst: 2_000)),
            try BudgetSpec(id: "q", unit: .tokens, kind: .quota(allowance: 1 << 40, window: try CalendarWindow(.minute))),
            try BudgetSpec(id: "c", unit: .requests, kind: .concurrency(limit: 8)),
        ]
        let core = try CoordinatorCore(settings: s, budgets: budgets, now: now)
        core.membersChanged([s.member!], now: now)
        return core
    }

    static let identities: [PeerIdentity] = [
        try! PeerIdentity(trustDomain: "fuzz", role: .node, name: "n1"),
        try! PeerIdentity(trustDomain: "fuzz", role: .node, name: "n2"),
        try! PeerIdentity(trustDomain: "fuzz", role: .admin, name: "ops"),
        try! PeerIdentity(trustDomain: "fuzz", role: .coordinator, name: "c1"),
    ]

    mutating func next() -> UInt64 {
        rng ^= rng << 13
        rng ^= rng >> 7
        rng ^= rng << 17
        return rng
    }

    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }

    static let boundaries: [UInt64] = [0, 1, 0x7f, 0x80, 0xffff, 1 << 31, 1 << 32, 1 << 62, (1 << 62) + 1,
                                       UInt64(Int64.max), UInt64(bitPattern: Int64.min), UInt64.max, UInt64.max - 1]

    /// A mutation of `input` (or of a splice of it with `other`).
    public mutating func mutate(_ input: [UInt8], other: [UInt8]) -> [UInt8] {
        var b = input
        for _ in 0..<(1 + below(4)) {
            switch below(8) {
            case 0 where !b.isEmpty: // flip a bit
                let i = below(b.count)
                b[i] ^= UInt8(1 << below(8))
            case 1 where !b.isEmpty: // a boundary value as a varint at a random place
                var v = Self.boundaries[below(Self.boundaries.count)]
                var bytes: [UInt8] = []
                while v >= 0x80 { bytes.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
                bytes.append(UInt8(v))
                let i = below(b.count + 1)
                b.replaceSubrange(i..<min(b.count, i + bytes.count), with: bytes)
            case 2 where b.count > 1: // truncate
                b.removeLast(below(b.count))
            case 3 where !other.isEmpty: // splice
                let cut = below(b.count + 1), from = below(other.count)
                b = Array(b[..<cut]) + Array(other[from...])
            case 4 where !b.isEmpty: // repeat a run
                let i = below(b.count), n = min(b.count - i, 1 + below(64))
                let run = b[i..<i + n]
                for _ in 0..<(1 + below(8)) { b.insert(contentsOf: run, at: i) }
            case 5 where !b.isEmpty: // random byte
                b[below(b.count)] = UInt8(truncatingIfNeeded: next())
            case 6: // a 4-byte length prefix in front (often the framing itself)
                let n = UInt32(truncatingIfNeeded: below(2) == 0 ? UInt64(b.count) : Self.boundaries[below(Self.boundaries.count)])
                b = withUnsafeBytes(of: n.bigEndian, Array.init) + b
            default:
                if b.count > 1, below(2) == 0 { b.remove(at: below(b.count)) }
            }
        }
        return b.count > 256 << 10 ? Array(b.prefix(256 << 10)) : b
    }

    /// Feeds `stream` (length-prefixed frames, as on the wire) from one peer through the whole
    /// input path. Returns how many frames were decoded.
    @discardableResult
    public mutating func feed(_ stream: [UInt8]) -> Int {
        fed += 1
        if fed % 2_000 == 0, let fresh = try? Self.makeCore(now: now) { core = fresh } // bounded state
        let identity = Self.identities[below(Self.identities.count)]
        var session = Session(identity: identity, limits: core.settings.session, now: now)
        var buffer = ByteBuffer(bytes: stream)
        var frames = 0
        var sink = ByteBuffer()
        while true {
            let frame: Allot_V1_Frame
            do {
                guard let f = try FrameDecoder.decodeOne(&buffer, maxFrameBytes: core.settings.maxFrameBytes,
                                                         maxItems: core.settings.session.maxItemsPerFrame) else { break }
                frame = f
            } catch {
                break // the listener closes the connection here
            }
            frames += 1
            now = now + .milliseconds(Int64(below(50)))
            var answers: [Allot_V1_Frame] = []
            switch session.frameReceived(frame, now: now) {
            case .accept(let incarnation):
                if let (_, ack) = core.connected(identity, incarnation: incarnation, sink: NullSink()) { answers.append(ack) }
            case .acquire(let items): answers += core.acquire(items, from: NodeID(identity.name), now: now)
            case .release(let items): core.release(items, from: NodeID(identity.name), now: now)
            case .heartbeat(let h): answers.append(.heartbeat(h.sequence, reply: true))
            case .status(let after): answers.append(core.status(after: after))
            case .lookup(let budgets, let query): answers.append(core.status(of: budgets, query: query))
            case .directory(let r) where identity.role == .node:
                if let f = core.directory.frame(newerThan: r.have) { answers.append(f) }
            case .directory: break // an admin's change writes the ledger (none here)
            case .gossip(let g): if let e = core.gossip(g, from: identity) { answers.append(e) }
            case .auditHead(let h): if let e = core.auditHead(h, from: NodeID(identity.name), now: now) { answers.append(e) }
            case .reject(let code, let message, let closing):
                answers.append(.error(code, message, closing: closing))
            case .ignore: break
            }
            for a in answers {
                sink.clear()
                try? FrameEncoder.encode(a, into: &sink, maxFrameBytes: core.settings.maxFrameBytes)
            }
            if session.state == .closed { break }
        }
        if below(8) == 0 {
            now = now + .seconds(Int64(below(120)))
            core.tick(now: now)
        }
        return frames
    }

    struct NullSink: FrameSink {
        func send(_ frame: Allot_V1_Frame) { _ = try? frame.serializedBytes() as [UInt8] }
        func close() {}
    }

    /// The seed corpus: one stream per kind of frame a peer sends, with ordinary and hostile values.
    public static func seedCorpus() -> [String: [UInt8]] {
        func stream(_ frames: [Allot_V1_Frame]) -> [UInt8] {
            var b = ByteBuffer()
            for f in frames { try? FrameEncoder.encode(f, into: &b, maxFrameBytes: 1 << 20) }
            return Array(b.readableBytesView)
        }
        let hello = Allot_V1_Frame.hello(name: "n1", incarnation: 7)
        var out: [String: [UInt8]] = [:]
        out["hello"] = stream([hello])
        out["acquire-each-kind"] = stream([hello, .acquire(["r", "q", "c"].enumerated().map {
            AcquireRequest(requestID: UInt64($0.offset + 1), node: "x", budget: BudgetID($0.element), want: 10, demandRate: 5)
        })])
        out["acquire-tier"] = stream([hello, .acquire([
            AcquireRequest(requestID: 1, node: "x", budget: "pro.rpm/consumer=alice", want: 3),
            AcquireRequest(requestID: 2, node: "x", budget: "pro.day/consumer=bob", want: 100),
            AcquireRequest(requestID: 3, node: "x", budget: "pro.inflight/consumer=carol", want: 1),
        ])])
        out["release-edges"] = stream([hello, .acquire([AcquireRequest(requestID: 1, node: "x", budget: "q", want: 10)]),
                                       .release([ReleaseRequest(node: "x", budget: "q", leaseID: 1, consumed: .max, released: .max, final: true)]),
                                       .release([ReleaseRequest(node: "x", budget: "q", leaseID: 1, consumed: .min, released: -1, final: false)])])
        out["acquire-edges"] = stream([hello, .acquire([AcquireRequest(requestID: .max, node: "x", budget: "c", want: .max, demandRate: .max,
                                                                        leaseID: .max, epoch: .max, consumed: .min, released: .max,
                                                                        holding: .max, available: .min, rateInUse: .max, capacityInUse: .max,
                                                                        appliedSequence: .max)])])
        var status = Allot_V1_Frame()
        status.statusRequest.after = "q"
        out["status"] = stream([Allot_V1_Frame.hello(name: "ops"), status, Allot_V1_Frame.heartbeat(.max, reply: false)])
        var lookup = Allot_V1_Frame()
        lookup.statusRequest.budgets = ["q", "", "pro.rpm/consumer=alice", String(repeating: "x", count: 513)]
        lookup.statusRequest.queryID = .max
        var pages = Allot_V1_Frame()
        pages.statusRequest.after = "q"
        out["lookup"] = stream([hello, .acquire([AcquireRequest(requestID: 1, node: "x", budget: "q", want: 10)]), lookup, pages])
        var wish = Allot_V1_Frame()
        wish.directoryRequest.have = .max
        var edit = Allot_V1_Frame()
        edit.directoryRequest.change = #"{"revokeKey":{"keyID":"000000000000"}}"#
        edit.directoryRequest.history = .max
        out["directory"] = stream([hello, wish, edit, Allot_V1_Frame()])
        let gossip = Membership.Envelope(from: MemberID(name: "c1", address: "127.0.0.1:7001"), to: MemberID(name: "c0", address: "127.0.0.1:7000"),
                                         message: .ping(seq: 1),
                                         updates: [Membership.Update(member: MemberID(name: "c0", address: "127.0.0.1:7000"), incarnation: .max, state: .suspect),
                                                   Membership.Update(member: MemberID(name: "ghost", address: "10.0.0.1:1"), incarnation: 3, state: .alive)])
        out["gossip"] = stream([Allot_V1_Frame.hello(name: "c1"), gossip.wire])
        out["wrong-role"] = stream([hello, .grants([], push: true), Allot_V1_Frame.members([], version: 1), .hello(name: "again")])
        return out
    }
}
