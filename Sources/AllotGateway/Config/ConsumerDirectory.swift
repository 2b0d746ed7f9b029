import AllotCore
import Crypto
import Foundation
import Yams

/// Who holds an API key. The consumers file stores only SHA-256 hashes of keys:
///
/// ```yaml
/// consumers:
///   - id: alice
///     team: search
///     tenant: acme
///     tier: pro
///     key_sha256: 6f1e...   # allot hash-key <key>
///     max_chain_depth: 3    # optional, overrides the tier's
/// ```
public struct ConsumerDirectory: Sendable {
    public struct Entry: Hashable, Sendable {
        public var consumer: Consumer
        /// The first 12 hex digits of the key's hash: names the key in logs and the audit trail.
        public var keyID: String
        public var maxChainDepth: Int?
        /// A key from the ledger's directory: refused from this instant on.
        public var expires: Instant?
    }

    private var byHash: [String: Entry] = [:]
    private var byID: [String: Entry] = [:]

    public init(entries: [(keySHA256: String, entry: Entry)]) {
        for (h, e) in entries {
            byHash[h] = e
            byID[e.consumer.id] = e
        }
    }

    public var count: Int { byHash.count }
    /// Every key's hash and entry (to merge two directories).
    public var all: [(keySHA256: String, entry: Entry)] { byHash.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }

    /// The entry for a presented key (hashed here; the key is never stored).
    public func lookup(key: String) -> Entry? { byHash[Self.hash(key)] }
    public func lookup(consumer id: String) -> Entry? { byID[id] }

    public static func hash(_ key: String) -> String {
        Hex.encode(SHA256.hash(data: Data(key.utf8)))
    }

    /// `path` "" (`gateway.consumers: ""`): no file, every consumer comes from the ledger's directory.
    public static func load(path: String, tiers: Set<String>) throws -> ConsumerDirectory {
        if path.isEmpty { return ConsumerDirectory(entries: []) }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw AllotError(.invalidSettings, "cannot read the consumers file \(path)")
        }
        return try ConsumerDirectory(yaml: text, tiers: tiers)
    }

    public init(yaml: String, tiers: Set<String>) throws(AllotError) {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw AllotError(.invalidSettings, "the consumers file is not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any], top.keys.sorted() == ["consumers"], let list = top["consumers"] as? [Any] else {
            throw AllotError(.invalidSettings, "the consumers file must be a mapping with one key, consumers: a list")
        }
        let allowed: Set<String> = ["id", "team", "tenant", "tier", "key_sha256", "max_chain_depth"]
        var entries: [(String, Entry)] = []
        var hashes = Set<String>(), ids = Set<String>()
        for (i, item) in list.enumerated() {
            let field = "consumers[\(i)]"
            guard let m = item as? [String: Any] else { throw AllotError(.invalidSettings, "\(field) must be a mapping") }
            for k in m.keys.sorted() where !allowed.contains(k) {
                throw AllotError(.invalidSettings, "\(field).\(k): unknown key; allowed here: \(allowed.sorted().joined(separator: ", "))")
            }
            func text(_ k: String) throws(AllotError) -> String? {
                guard let v = m[k] else { return nil }
                guard let s = v as? String, TierCatalog.acceptable(s), !s.contains("/") else {
                    throw AllotError(.invalidSettings, "\(field).\(k) must be 1 to \(TierCatalog.maxValueBytes) bytes of printable ASCII without ',', '=', '/' or spaces")
                }
                return s
            }
            guard let id = try text("id") else { throw AllotError(.invalidSettings, "\(field).id is missing") }
            guard let tier = try text("tier") else { throw AllotError(.invalidSettings, "\(field).tier is missing") }
            guard tiers.contains(tier) else {
                throw AllotError(.unknownTier, "\(field).tier: '\(tier)' is not configured (known: \(tiers.sorted().joined(separator: ", ")))")
            }
            guard let hash = (m["key_sha256"] as? String)?.lowercased(), hash.count == 64,
                  hash.allSatisfy({ $0.isHexDigit }) else {
                throw AllotError(.invalidSettings, "\(field).key_sha256 must be 64 hex digits (allot hash-key KEY prints it)")
            }
            guard hashes.insert(hash).inserted else { throw AllotError(.invalidSettings, "\(field).key_sha256: the same key is listed twice") }
            guard ids.insert(id).inserted else { throw AllotError(.invalidSettings, "\(field).id: consumer '\(id)' is listed twice") }
            var depth: Int?
            if let d = m["max_chain_depth"] {
                guard let v = d as? Int, v >= 0 else { throw AllotError(.invalidSettings, "\(field).max_chain_depth must be 0 or more") }
                depth = v
            }
            let consumer = Consumer(id: id, team: try text("team"), tenant: try text("tenant"), tier: tier)
            entries.append((hash, Entry(consumer: consumer, keyID: String(hash.prefix(12)), maxChainDepth: depth)))
        }
        self.init(entries: entries)
    }
}
