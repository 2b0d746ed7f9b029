import AllotCore
import AllotTransport

/// The peers connected to one coordinator: every connection by id, and each node's current
/// one (a node that reconnects replaces its entry; the old connection's close leaves it).
struct PeerConnections: Sendable {
    struct Connection: Sendable {
        var identity: PeerIdentity
        var sink: any FrameSink
        /// The peer certificate's serial number (hex), for the deny list.
        var serial = ""
    }

    private(set) var all: [UInt64: Connection] = [:]
    private var nodes: [NodeID: UInt64] = [:]
    private var next: UInt64 = 1

    /// How many connections `identity` has open.
    func count(of identity: PeerIdentity) -> Int { all.values.lazy.filter { $0.identity.uri == identity.uri }.count }

    mutating func add(_ identity: PeerIdentity, serial: String, sink: any FrameSink) -> UInt64 {
        let id = next
        next += 1
        all[id] = Connection(identity: identity, sink: sink, serial: serial)
        if identity.role == .node { nodes[NodeID(identity.name)] = id }
        return id
    }

    mutating func remove(_ id: UInt64) {
        guard let c = all.removeValue(forKey: id) else { return }
        if nodes[NodeID(c.identity.name)] == id { nodes[NodeID(c.identity.name)] = nil }
    }

    /// Where frames for `node` go (nil: not connected; it asks again when it is).
    func sink(of node: NodeID) -> (any FrameSink)? { nodes[node].flatMap { all[$0]?.sink } }
    var nodeSinks: [any FrameSink] { nodes.values.compactMap { all[$0]?.sink } }
    var nodeCount: Int { nodes.count }
}
