import AllotCore

// Conversions between the engine's messages and their wire form. The node's identity is
// never read from a message: the receiver passes the name from the peer's certificate.

extension AcquireRequest {
    public init(wire a: Allot_V1_Acquire, node: NodeID) {
        self.init(requestID: a.requestID, node: node, budget: BudgetID(a.budget), want: a.want,
                  demandRate: a.demandRate, leaseID: a.leaseID, epoch: a.epoch, consumed: a.consumed,
                  released: a.released, holding: a.holding, available: a.available,
                  rateInUse: a.rateInUse, capacityInUse: a.capacityInUse, appliedSequence: a.appliedSequence)
    }

    public var wire: Allot_V1_Acquire {
        var a = Allot_V1_Acquire()
        a.requestID = requestID
        a.budget = budget.rawValue
        a.want = want
        a.demandRate = demandRate
        a.leaseID = leaseID
        a.epoch = epoch
        a.consumed = consumed
        a.released = released
        a.holding = holding
        a.available = available
        a.rateInUse = rateInUse
        a.capacityInUse = capacityInUse
        a.appliedSequence = appliedSequence
        return a
    }
}

extension Allot_V1_Acquire {
    /// The first count outside 0...maxUnits, by its field name (nil: all in range).
    public var outOfRange: String? {
        // Fast path, no allocation: every count below 2^62 and none negative.
        guard (want | demandRate | consumed | released | holding | available | rateInUse | capacityInUse) & WireProtocol.highBits != 0 else { return nil }
        return WireProtocol.outOfRange([("want", want), ("demand_rate", demandRate), ("consumed", consumed), ("released", released),
                                        ("holding", holding), ("available", available), ("rate_in_use", rateInUse),
                                        ("capacity_in_use", capacityInUse)])
    }
}

extension Allot_V1_Release {
    /// The first count outside 0...maxUnits, by its field name (nil: all in range).
    public var outOfRange: String? {
        guard (consumed | released) & WireProtocol.highBits != 0 else { return nil }
        return WireProtocol.outOfRange([("consumed", consumed), ("released", released)])
    }
}

extension WireProtocol {
    /// Bits a count below 2^62 never has (the sign bit included).
    static let highBits: Int64 = ~(maxUnits - 1)

    static func outOfRange(_ fields: [(String, Int64)]) -> String? {
        fields.first { !(0...maxUnits).contains($0.1) }.map { "\($0.0) = \($0.1)" }
    }

    /// `ns` nanoseconds within 0...`limit`.
    public static func duration(ns: Int64, limit: Duration) -> Duration { .nanoseconds(min(max(ns, 0), limit.nanoseconds)) }
}

extension Grant {
    /// A grant as the coordinator sent it, its counts clamped to 0...maxUnits and its
    /// durations to their limits (a coordinator's numbers are not trusted blindly either).
    public init(wire g: Allot_V1_Grant) {
        self.init(requestID: g.requestID, budget: BudgetID(g.budget), leaseID: g.leaseID, epoch: g.epoch,
                  amount: Checked.units(g.amount), ttl: WireProtocol.duration(ns: g.ttlNs, limit: WireProtocol.maxLeaseTTL),
                  adopted: g.adopted, retryAfter: WireProtocol.duration(ns: g.retryAfterNs, limit: WireProtocol.maxRetryAfter),
                  rate: Checked.units(g.rate), capacity: Checked.units(g.capacity), sequence: g.sequence)
    }

    public var wire: Allot_V1_Grant {
        var g = Allot_V1_Grant()
        g.requestID = requestID
        g.budget = budget.rawValue
        g.leaseID = leaseID
        g.epoch = epoch
        g.amount = amount
        g.ttlNs = ttl.nanoseconds
        g.adopted = adopted
        g.retryAfterNs = retryAfter.nanoseconds
        g.rate = rate
        g.capacity = capacity
        g.sequence = sequence
        g.outcome = .granted
        return g
    }
}

extension ReleaseRequest {
    public init(wire r: Allot_V1_Release, node: NodeID) {
        self.init(node: node, budget: BudgetID(r.budget), leaseID: r.leaseID, consumed: r.consumed,
                  released: r.released, final: r.final)
    }

    public var wire: Allot_V1_Release {
        var r = Allot_V1_Release()
        r.budget = budget.rawValue
        r.leaseID = leaseID
        r.consumed = consumed
        r.released = released
        r.final = final
        return r
    }
}

extension Allot_V1_Frame {
    public static func hello(name: String, capabilities: [String] = [], incarnation: UInt64 = 0) -> Allot_V1_Frame {
        var h = Allot_V1_Hello()
        h.protocolVersion = WireProtocol.version
        h.peerName = name
        h.capabilities = capabilities
        h.incarnation = incarnation
        var f = Allot_V1_Frame()
        f.hello = h
        return f
    }

    public static func error(_ code: Allot_V1_Error.Code, _ message: String, closing: Bool) -> Allot_V1_Frame {
        var e = Allot_V1_Error()
        e.code = code
        e.message = message
        e.closing = closing
        var f = Allot_V1_Frame()
        f.error = e
        return f
    }

    public static func acquire(_ items: [AcquireRequest]) -> Allot_V1_Frame {
        var b = Allot_V1_AcquireBatch()
        b.items = items.map(\.wire)
        var f = Allot_V1_Frame()
        f.acquire = b
        return f
    }

    public static func release(_ items: [ReleaseRequest]) -> Allot_V1_Frame {
        var b = Allot_V1_ReleaseBatch()
        b.items = items.map(\.wire)
        var f = Allot_V1_Frame()
        f.release = b
        return f
    }

    public static func grants(_ items: [Allot_V1_Grant], push: Bool = false) -> Allot_V1_Frame {
        var b = Allot_V1_GrantBatch()
        b.items = items
        var f = Allot_V1_Frame()
        if push { f.push = b } else { f.grants = b }
        return f
    }

    public static func heartbeat(_ sequence: UInt64, reply: Bool) -> Allot_V1_Frame {
        var h = Allot_V1_Heartbeat()
        h.sequence = sequence
        h.reply = reply
        var f = Allot_V1_Frame()
        f.heartbeat = h
        return f
    }

    /// The body's name, for logs and metrics.
    public var kind: String {
        switch body {
        case .hello: "hello"
        case .helloAck: "hello_ack"
        case .heartbeat: "heartbeat"
        case .acquire: "acquire"
        case .grants: "grants"
        case .release: "release"
        case .push: "push"
        case .error: "error"
        case .statusRequest: "status_request"
        case .statusResponse: "status_response"
        case .gossip: "gossip"
        case .members: "members"
        case .auditHead: "audit_head"
        case .directoryRequest: "directory_request"
        case .directoryResponse: "directory_response"
        case .none: "unknown"
        }
    }
}

extension Allot_V1_Frame {
    /// Grants (or pushes) in as many frames as it takes: at most `maxItems` each, and each
    /// under `maxBytes` encoded. None when there is nothing to send.
    public static func grants(_ items: [Allot_V1_Grant], push: Bool = false, maxItems: Int, maxBytes: Int) -> [Allot_V1_Frame] {
        WireProtocol.pages(items, maxItems: maxItems, maxBytes: maxBytes) { g in
            g.budget.utf8.count + g.owner.name.utf8.count + g.owner.address.utf8.count
        }.map { grants(Array($0), push: push) }
    }
}

extension WireProtocol {
    /// Bytes an item's fixed fields take at most, besides its strings (11 varints of up to
    /// 10 bytes, tags, lengths): the margin `pages` counts per item.
    public static let itemOverheadBytes = 192

    /// Splits `items` into runs of at most `maxItems` whose estimated encoded size (`strings`
    /// bytes plus `itemOverheadBytes` each) stays under `maxBytes` less a frame's own margin.
    /// An item too large for any frame is still a run of its own (the encoder refuses it).
    public static func pages<T>(_ items: [T], maxItems: Int, maxBytes: Int, strings: (T) -> Int) -> [ArraySlice<T>] {
        let room = max(1, maxBytes - 1024)
        var out: [ArraySlice<T>] = []
        var start = 0, bytes = 0
        for (i, item) in items.enumerated() {
            let size = strings(item) + itemOverheadBytes
            if i > start && (i - start >= maxItems || bytes + size > room) {
                out.append(items[start..<i])
                start = i
                bytes = 0
            }
            bytes += size
        }
        if start < items.count { out.append(items[start...]) }
        return out
    }
}
