import AllotConfig
import AllotCore
import Foundation

/// Where a gateway's consumers come from: the consumers file (if any), and the consumer
/// directory coordinators keep in the ledger and send over the lease protocol (the newest
/// version received, also kept on disk in `gateway.directory_cache` so a restart with no
/// coordinator reachable still authenticates). A key in both names the ledger's consumer.
public struct DirectorySources: Sendable {
    public var file: ConsumerDirectory
    /// The newest directory received, as received (consumers of every tier).
    public var ledger: (version: UInt64, directory: Directory)?
    /// The tiers this gateway knows: a directory consumer of another tier is left out, unless
    /// the policy came from the coordinators (`everyTier`): then its tier was removed, and its
    /// requests are refused naming the version (`GatewayCore.Policy.check`), not its key.
    public var tiers: Set<String>
    public var everyTier = false

    public init(file: ConsumerDirectory, tiers: Set<String>, ledger: (version: UInt64, directory: Directory)? = nil) {
        self.file = file
        self.tiers = tiers
        self.ledger = ledger
    }

    /// Consumers of the directory whose tier this gateway does not know.
    public var skipped: Int { everyTier ? 0 : ledger?.directory.consumers.filter { !tiers.contains($0.tier) }.count ?? 0 }

    /// File keys are managed in the file, directory keys in the directory (`allot keys`);
    /// each key names its own source's consumer.
    public var merged: ConsumerDirectory {
        guard let d = ledger?.directory else { return file }
        let consumers = Dictionary(d.consumers.filter { everyTier || tiers.contains($0.tier) }.map { ($0.id, $0) }) { a, _ in a }
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

    /// A directory from a coordinator (or the cache): applied when newer than the one held,
    /// under the same lock as the check (two coordinators' pushes may race: the newer one
    /// stays). Consumers of a tier this gateway does not know are left out (and counted),
    /// but kept: a restart that adds the tier serves them. True when applied.
    @discardableResult
    public func apply(directory: Directory, version: UInt64) -> Bool {
        let applied = sources.withLock { s -> (consumers: Int, keys: Int, skipped: Int)? in
            guard version > (s.ledger?.version ?? 0) else { return nil }
            s.ledger = (version, directory)
            let merged = s.merged
            consumers.withLock { $0 = merged }
            return (directory.consumers.count - s.skipped, directory.keys.count, s.skipped)
        }
        guard let applied else { return false }
        metrics.directory(version: version, consumers: applied.consumers, keys: applied.keys, skipped: applied.skipped)
        return true
    }

    // MARK: the cache on disk

    struct Cached: Codable {
        var version: UInt64
        var document: Directory
    }

    /// Writes the directory held to `path`: one save at a time, a file of its own renamed
    /// over the old one after it is on disk, and never an older version over a newer one.
    public func saveDirectory(to path: String) throws {
        try saving.withLock { savedVersion in
            guard let held = sources.withLock({ $0.ledger }), held.version > savedVersion else { return }
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            try Self.replace(path, with: try e.encode(Cached(version: held.version, document: held.directory)), tag: held.version,
                             field: "gateway.directory_cache")
            savedVersion = held.version
        }
    }

    /// Writes `data` to `path` whole: a file of its own (`tag` in its name), synced, then
    /// renamed over the old one.
    static func replace(_ path: String, with data: Data, tag: UInt64, field: String) throws {
        let tmp = "\(path).\(tag).tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: data), let h = FileHandle(forUpdatingAtPath: tmp) else {
            throw AllotError(.invalidSettings, "\(field): cannot write \(tmp)")
        }
        try h.synchronize()
        try h.close()
        guard rename(tmp, path) == 0 else {
            let e = errno
            try? FileManager.default.removeItem(atPath: tmp)
            throw AllotError(.invalidSettings, "\(field): cannot replace \(path) (errno \(e))")
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
