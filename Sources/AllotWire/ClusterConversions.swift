import AllotCluster
import AllotCore

// Membership messages (coordinator to coordinator) and member lists (coordinator to node).

extension MemberID {
    public init(wire m: Allot_V1_Member) { self.init(name: m.name, address: m.address) }

    public var wire: Allot_V1_Member {
        var m = Allot_V1_Member()
        m.name = name
        m.address = address
        return m
    }
}

extension Membership.Envelope {
    /// Nil for a gossip frame that does not make sense (no sender or receiver, an update with
    /// an unknown state or an incarnation above `Membership.maxIncarnation`).
    public init?(wire g: Allot_V1_Gossip) {
        guard g.hasFrom, g.hasTo, !g.from.name.isEmpty, !g.to.name.isEmpty,
              !g.updates.contains(where: { $0.incarnation > Membership.maxIncarnation || !$0.hasMember }) else { return nil }
        let message: Membership.Message
        switch g.kind {
        case .ping: message = .ping(seq: g.sequence)
        case .ack: message = .ack(seq: g.sequence)
        case .pingRequest:
            guard g.hasTarget else { return nil }
            message = .pingRequest(seq: g.sequence, target: MemberID(wire: g.target))
        case .UNRECOGNIZED: return nil
        }
        let updates = g.updates.compactMap { u -> Membership.Update? in
            guard let state = Membership.State(rawValue: u.state.rawValue), u.hasMember else { return nil }
            return Membership.Update(member: MemberID(wire: u.member), incarnation: u.incarnation, state: state)
        }
        self.init(from: MemberID(wire: g.from), to: MemberID(wire: g.to), message: message, updates: updates)
    }

    public var wire: Allot_V1_Frame {
        var g = Allot_V1_Gossip()
        g.from = from.wire
        g.to = to.wire
        switch message {
        case .ping(let seq):
            g.kind = .ping
            g.sequence = seq
        case .ack(let seq):
            g.kind = .ack
            g.sequence = seq
        case .pingRequest(let seq, let target):
            g.kind = .pingRequest
            g.sequence = seq
            g.target = target.wire
        }
        g.updates = updates.map { u in
            var w = Allot_V1_MemberUpdate()
            w.member = u.member.wire
            w.incarnation = u.incarnation
            w.state = Allot_V1_MemberUpdate.State(rawValue: u.state.rawValue) ?? .alive
            return w
        }
        var f = Allot_V1_Frame()
        f.gossip = g
        return f
    }
}

extension Allot_V1_Frame {
    public static func members(_ members: [MemberID], version: UInt64) -> Allot_V1_Frame {
        var l = Allot_V1_MemberList()
        l.members = members.map(\.wire)
        l.version = version
        var f = Allot_V1_Frame()
        f.members = l
        return f
    }
}
