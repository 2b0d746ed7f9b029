import AllotCore

/// Outgoing connections to peers by address, as bookkeeping: which address to dial and when,
/// which connection is the current one, how long to back off. Pure: the shells (`LeaseClient`
/// towards coordinators, `ClusterService` towards the other coordinators) dial, hold the
/// connections and report what happened, with the time; the jitter comes from a seeded
/// generator, so the rules are tested in virtual time.
///
/// Every dial gets a generation: a connection reported for an older generation than the
/// peer's current one (the peer was dropped meanwhile) is stale, and so is the close of one.
public struct PeerPool: Sendable {
    public struct Settings: Sendable {
        /// Backoff after a failed dial: starts at `minBackoff`, doubles up to `maxBackoff`,
        /// each wait drawn in [½, 1] of it. After a connection closes, `minBackoff`.
        public var minBackoff: Duration = .milliseconds(50)
        public var maxBackoff: Duration = .seconds(5)
        public init() {}
    }

    public struct Peer: Sendable, Hashable {
        public internal(set) var connected = false
        public internal(set) var connecting = false
        public internal(set) var generation = 0
        public internal(set) var backoff: Duration
        public internal(set) var notBefore: Instant = .zero
    }

    public let settings: Settings
    public private(set) var peers: [String: Peer] = [:]
    private var generation = 0
    private var random: SeededRandom

    public init(settings: Settings = Settings(), seed: UInt64) {
        self.settings = settings
        random = SeededRandom(seed: seed)
    }

    public func isConnected(_ address: String) -> Bool { peers[address]?.connected == true }
    /// The connected addresses, sorted.
    public var connected: [String] { peers.filter(\.value.connected).map(\.key).sorted() }

    /// Marks `address` as being dialled unless it is connected, already being dialled or
    /// (with `respectBackoff`) still backing off. Returns the dial's generation (nil: do not dial).
    public mutating func claim(_ address: String, now: Instant, respectBackoff: Bool = true) -> Int? {
        var p = peers[address] ?? Peer(backoff: settings.minBackoff)
        guard !p.connected, !p.connecting, !respectBackoff || now >= p.notBefore else { return nil }
        p.connecting = true
        generation += 1
        p.generation = generation
        peers[address] = p
        return generation
    }

    /// The dial of `generation` connected (and did not close first). False when it is stale:
    /// the shell closes it instead of keeping it.
    public mutating func connected(_ address: String, generation: Int) -> Bool {
        guard var p = peers[address], p.generation == generation else { return false }
        p.connecting = false
        p.connected = true
        p.backoff = settings.minBackoff
        peers[address] = p
        return true
    }

    /// The dial of `generation` failed, or its connection closed before it could be kept:
    /// the next dial waits for the backoff, which doubles.
    public mutating func failed(_ address: String, generation: Int, now: Instant) {
        guard var p = peers[address], p.generation == generation else { return }
        p.connecting = false
        p.connected = false
        p.notBefore = now + p.backoff * random.next(in: 0.5...1.0)
        p.backoff = min(p.backoff * 2, settings.maxBackoff)
        peers[address] = p
    }

    /// The connection of `generation` closed. True when it was the current one (then the
    /// peer may be dialled again after `minBackoff`).
    public mutating func closed(_ address: String, generation: Int, now: Instant) -> Bool {
        guard var p = peers[address], p.generation == generation, p.connected || p.connecting else { return false }
        p.connected = false
        p.connecting = false
        p.notBefore = now + settings.minBackoff
        peers[address] = p
        return true
    }

    /// Forgets the current connection or dial of `address` (a peer that left the view may sit
    /// behind a partition that drops packets without a reset): whatever it reports later is
    /// stale. True when there was one to close.
    @discardableResult
    public mutating func drop(_ address: String) -> Bool {
        guard var p = peers[address], p.connected || p.connecting else { return false }
        generation += 1
        p.generation = generation
        p.connected = false
        p.connecting = false
        peers[address] = p
        return true
    }

    /// Forgets every peer (shutdown).
    public mutating func dropAll() { for a in peers.keys { drop(a) } }
}
