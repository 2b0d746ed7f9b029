@testable import AllotCoordinator
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOTLS
import Testing

/// The coordinator's connection handler on an `EmbeddedChannel`: no sockets, no TLS, time
/// advanced by hand. The peer's identity is passed in where TLS would read the certificate.
@Suite("Coordinator connection handler (EmbeddedChannel)")
struct ConnectionHandlerTests {
    struct Rig {
        let core: CoordinatorCore
        let channel: EmbeddedChannel
        let loop: EmbeddedEventLoop
        let open: OpenConnections

        /// Frames the handler wrote.
        func written() throws -> [Allot_V1_Frame] {
            var out: [Allot_V1_Frame] = []
            while let f = try channel.readOutbound(as: Allot_V1_Frame.self) { out.append(f) }
            return out
        }

        func errors(_ frames: [Allot_V1_Frame]) -> [Allot_V1_Error] {
            frames.compactMap { if case .error(let e) = $0.body { return e } else { return nil } }
        }
    }

    static func rig(role: PeerIdentity.Role = .node, name: String = "gw-1", limits: ListenerLimits = ListenerLimits(),
                    maxRefusals: Int? = nil, openAlready: Int = 0,
                    peer: ((ChannelHandlerContext) throws -> (identity: PeerIdentity, notValidAfter: Date, serial: String))? = nil) throws -> Rig {
        var settings = CoordinatorCore.Settings()
        settings.listener = limits
        if let maxRefusals { settings.session.maxRefusals = maxRefusals }
        let core = try CoordinatorCore(settings: settings, budgets: [
            try BudgetSpec(id: "rps", unit: .requests, kind: .rate(limit: 100, period: .seconds(1), burst: 100)),
        ], now: WallClock.now())
        let identity = try PeerIdentity(trustDomain: "allot.test", role: role, name: name)
        let open = OpenConnections()
        open.count.store(openAlready, ordering: .relaxed)
        var logger = Logger(label: "handler-test")
        logger.logLevel = .critical
        let handler = CoordinatorConnectionHandler(core: core, open: open, logger: logger,
                                                   peer: peer ?? { _ in (identity, Date().addingTimeInterval(86_400), "01") })
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(handler: handler, loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7400)).wait()
        return Rig(core: core, channel: channel, loop: loop, open: open)
    }

    @Test("a hello is answered with hello_ack; an acquire after it is granted")
    func helloThenAcquire() throws {
        let r = try Self.rig()
        try r.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1"))
        #expect(try r.written().map(\.kind) == ["hello_ack"])
        try r.channel.writeInbound(Allot_V1_Frame.acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 5, demandRate: 5)]))
        let grants = try r.written().flatMap { f -> [Allot_V1_Grant] in if case .grants(let g) = f.body { return g.items } else { return [] } }
        #expect(grants.count == 1 && grants[0].amount > 0 && grants[0].outcome == .granted)
        #expect(r.core.connectedNodes == 1)
        try r.channel.close().wait()
        #expect(r.core.connectedNodes == 0 && r.open.count.load(ordering: .relaxed) == 0)
    }

    @Test("a first frame other than hello is refused and the connection closed")
    func firstFrameMustBeHello() throws {
        let r = try Self.rig()
        try r.channel.writeInbound(Allot_V1_Frame.acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 5)]))
        let e = r.errors(try r.written())
        #expect(e.count == 1 && e[0].code == .protocolViolation && e[0].closing && e[0].message.contains("must be hello"))
        #expect(!r.channel.isActive)
    }

    @Test("an admin certificate may not acquire: refused, counted, the connection stays")
    func roleRefused() throws {
        let r = try Self.rig(role: .admin, name: "ops")
        try r.channel.writeInbound(Allot_V1_Frame.hello(name: "ops"))
        _ = try r.written()
        try r.channel.writeInbound(Allot_V1_Frame.acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 5)]))
        let e = r.errors(try r.written())
        #expect(e.count == 1 && e[0].code == .permissionDenied && !e[0].closing)
        #expect(r.channel.isActive && r.core.counters.rejected["permission_denied"] == 1)
    }

    @Test("a node may look up the budgets it names (its gateway's usage endpoint), answered with its query id; it may not page through every budget")
    func nodeLookup() throws {
        let r = try Self.rig()
        try r.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1"))
        _ = try r.written()
        try r.channel.writeInbound(Allot_V1_Frame.acquire([AcquireRequest(requestID: 1, node: "x", budget: "rps", want: 5, demandRate: 5)]))
        _ = try r.written()
        var lookup = Allot_V1_Frame()
        lookup.statusRequest.budgets = ["rps", "unknown"]
        lookup.statusRequest.queryID = 42
        try r.channel.writeInbound(lookup)
        let answers = try r.written().compactMap { f -> Allot_V1_StatusResponse? in if case .statusResponse(let s) = f.body { return s } else { return nil } }
        #expect(answers.count == 1 && answers[0].queryID == 42)
        // Only what it named and the coordinator holds; the books as `allot status` shows them.
        #expect(answers.first?.budgets.map(\.budget) == ["rps"])
        #expect(answers.first?.budgets.first?.outstanding == r.core.allocatorStatus("rps")?.outstanding)
        // Paging through every budget is for admin certificates.
        var pages = Allot_V1_Frame()
        pages.statusRequest.after = ""
        try r.channel.writeInbound(pages)
        let e = r.errors(try r.written())
        #expect(e.count == 1 && e[0].code == .permissionDenied && !e[0].closing)
        // A name no budget can have is refused, the connection stays.
        lookup.statusRequest.budgets = [String(repeating: "x", count: 600)]
        try r.channel.writeInbound(lookup)
        let long = r.errors(try r.written())
        #expect(long.count == 1 && long[0].code == .protocolViolation && r.channel.isActive)
    }

    @Test("a node may ask for the consumer directory and the policy, not change either or read their history")
    func nodeDirectory() throws {
        let r = try Self.rig()
        try r.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1"))
        _ = try r.written()
        var ask = Allot_V1_Frame()
        ask.directoryRequest.have = 0
        try r.channel.writeInbound(ask)
        #expect(try r.written().isEmpty, "version 0 (no directory): nothing to send")
        var policy = ask
        policy.directoryRequest.config = true
        try r.channel.writeInbound(policy)
        #expect(try r.written().isEmpty, "policy version 0 (the file's): nothing to send")
        for edit in [{ (f: inout Allot_V1_Frame) in f.directoryRequest.change = #"{"revokeKey":{"keyID":"x"}}"# },
                     { (f: inout Allot_V1_Frame) in f.directoryRequest.history = 5 },
                     { (f: inout Allot_V1_Frame) in (f.directoryRequest.config, f.directoryRequest.policy) = (true, Data("budgets: []".utf8)) },
                     { (f: inout Allot_V1_Frame) in (f.directoryRequest.config, f.directoryRequest.dryRun) = (true, true) },
                     { (f: inout Allot_V1_Frame) in (f.directoryRequest.config, f.directoryRequest.history) = (true, 5) }] {
            var f = ask
            edit(&f)
            try r.channel.writeInbound(f)
            let e = r.errors(try r.written())
            #expect(e.count == 1 && e[0].code == .permissionDenied && !e[0].closing && r.channel.isActive)
        }
    }

    @Test("a certificate that fails the identity check (deny list) is refused at its first frame")
    func identityRefused() throws {
        let r = try Self.rig(peer: { _ in throw TransportError(.denied, "serial 01 is on the deny list") })
        try r.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1"))
        let e = r.errors(try r.written())
        #expect(e.count == 1 && e[0].code == .permissionDenied && e[0].closing && e[0].message.contains("deny list"))
        #expect(r.core.counters.rejected["denied"] == 1 && !r.channel.isActive)
    }

    @Test("no TLS handshake within handshake_timeout, or no hello within hello_timeout after it: closed, counted")
    func deadlines() throws {
        var limits = ListenerLimits()
        limits.handshakeTimeout = .seconds(5)
        limits.helloTimeout = .seconds(2)
        let quiet = try Self.rig(limits: limits)
        quiet.loop.advanceTime(by: .milliseconds(4_900))
        #expect(quiet.channel.isActive)
        quiet.loop.advanceTime(by: .milliseconds(200))
        #expect(!quiet.channel.isActive && quiet.core.counters.closedByLimit["handshake_timeout"] == 1)

        let shy = try Self.rig(limits: limits)
        shy.loop.advanceTime(by: .seconds(1))
        shy.channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        shy.loop.advanceTime(by: .milliseconds(1_900)) // past the handshake deadline: replaced by the hello's
        #expect(shy.channel.isActive)
        shy.loop.advanceTime(by: .milliseconds(200))
        #expect(!shy.channel.isActive && shy.core.counters.closedByLimit["hello_timeout"] == 1)

        let prompt = try Self.rig(limits: limits)
        prompt.channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        try prompt.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1"))
        prompt.loop.advanceTime(by: .seconds(60))
        #expect(prompt.channel.isActive, "a hello disarms the deadline")
    }

    @Test("past max_connections the connection is closed at once, counted")
    func connectionCap() throws {
        var limits = ListenerLimits()
        limits.maxConnections = 4
        let r = try Self.rig(limits: limits, openAlready: 4)
        #expect(!r.channel.isActive && r.core.counters.closedByLimit["connection_cap"] == 1)
        #expect(r.open.count.load(ordering: .relaxed) == 4, "the refused connection is not counted once closed")
    }

    @Test("refused frames beyond max_refused_frames close the connection with a closing error")
    func refusedFrames() throws {
        let r = try Self.rig(maxRefusals: 2)
        try r.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1"))
        _ = try r.written()
        for _ in 0..<3 { try? r.channel.writeInbound(Allot_V1_Frame.hello(name: "gw-1")) }
        let e = r.errors(try r.written())
        #expect(e.count == 3 && e.prefix(2).allSatisfy { !$0.closing } && e[2].closing)
        #expect(!r.channel.isActive)
    }
}
