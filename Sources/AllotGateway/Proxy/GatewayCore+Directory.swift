import AllotConfig
import AllotCore
import Foundation

/// Where a gateway's consumers come from: the consumers file (if any), and the consumer
/// directory coordinators keep in the ledger and send over the lease protocol (the newest
/// version received, also kept on disk in `gateway.directory_cache` so a restart with no
/// coordinator reachable still authenticates). A key in both names the ledger's consumer.
public struct DirectorySources: Sendable {
    public var file: ConsumerDirectory
    public var ledger: (version: UInt64, directory: Directory)?

    public init(file: ConsumerDirectory, ledger: (version: UInt64, directory: Directory)? = nil) {
        self.file = file
        self.ledger = ledger
    }

    public var merged: ConsumerDirectory {
        guard let d = ledger?.directory else { return file }
        let consumers = Dictionary(d.consumers.map { ($0.id, $0) }) { a, _ in a }
        var entries = Dictionary(file.all.map { ($0.keySHA256, $0.entry) }) { a, _ in a }
        for k in d.keys {
            guard let c = consumers[k.consumer] else { continue }
            entries[k.key_sha256] = ConsumerDirectory.Entry(
                consumer: Consumer(id: c.id, team: c.team, tenant: c.tenant, tier: c.tier), keyID: k.key_id,
                maxChainDepth: c.max_chain_depth, expires: k.expires_unix_ns.map { Instant(nanoseconds: $0) })
        }
        return ConsumerDirectory(entries: entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }
}

extension GatewayCore {
    /// The ledger directory's version this gateway holds (0: none).
    public var directoryVersion: UInt64 { sources.withLock { $0.ledger?.version ?? 0 } }

    /// A directory from a coordinator (or the cache): applied when newer than the one held.
    /// Its tiers must be this gateway's: a consumer of an unknown tier is left out, with
    /// the count in `skipped`. True when applied.
    @discardableResult
    public func apply(directory: Directory, version: UInt64) -> Bool {
        let tiers = Set(config.shared.tiers.map(\.name))
        var d = directory
        let known = Set(d.consumers.filter { tiers.contains($0.tier) }.map(\.id))
        d.consumers.removeAll { !known.contains($0.id) }
        d.keys.removeAll { !known.contains($0.consumer) }
        let merged = sources.withLock { s -> ConsumerDirectory? in
            guard version > (s.ledger?.version ?? 0) else { return nil }
            s.ledger = (version, d)
            return s.merged
        }
        guard let merged else { return false }
        consumers.withLock { $0 = merged }
        metrics.directory(version: version, consumers: d.consumers.count, keys: d.keys.count,
                          skipped: directory.consumers.count - d.consumers.count)
        return true
    }

    // MARK: the cache on disk

    struct Cached: Codable {
        var version: UInt64
        var document: Directory
    }

    /// Writes the directory held to `path` (a new file renamed over the old one).
    public func saveDirectory(to path: String) throws {
        guard let held = sources.withLock({ $0.ledger }) else { return }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let data = try e.encode(Cached(version: held.version, document: held.directory))
        let tmp = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, path) == 0 else {
            throw AllotError(.invalidSettings, "gateway.directory_cache: cannot replace \(path) (errno \(errno))")
        }
    }

    /// Reads a directory saved by `saveDirectory` (nil when there is no file).
    public static func loadDirectory(from path: String) throws(AllotError) -> (version: UInt64, directory: Directory)? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path),
              let c = try? JSONDecoder().decode(Cached.self, from: data) else {
            throw AllotError(.invalidSettings, "gateway.directory_cache: \(path) is not a directory saved by allot")
        }
        return (c.version, c.document)
    }
}
