import AllotCore
import Crypto
import Foundation

/// The consumer directory kept in the ledger (docs/operations.md, "Keys and consumers"):
/// consumers and the SHA-256 hashes of their API keys, changed at run time by `allot keys` and
/// `allot consumers`, versioned (each change a new version with its author, time and what it
/// changed), and sent to every gateway over the lease protocol. Keys themselves are never
/// stored or sent: the CLI makes a key, prints it once and sends only its hash.
///
/// Encoded as JSON with sorted keys (the document in the ledger and on the wire).
public struct Directory: Codable, Hashable, Sendable {
    public struct ConsumerRecord: Codable, Hashable, Sendable {
        public var id: String
        public var tier: String
        public var team: String?
        public var tenant: String?
        public var max_chain_depth: Int?

        public init(id: String, tier: String, team: String? = nil, tenant: String? = nil, maxChainDepth: Int? = nil) {
            (self.id, self.tier, self.team, self.tenant, self.max_chain_depth) = (id, tier, team, tenant, maxChainDepth)
        }
    }

    public struct KeyRecord: Codable, Hashable, Sendable {
        /// The first 12 hex digits of the hash: names the key in lists, logs and audit records.
        public var key_id: String
        public var consumer: String
        public var key_sha256: String
        public var created_unix_ns: Int64
        /// Refused from this instant on (nil: never).
        public var expires_unix_ns: Int64?

        public init(consumer: String, keySHA256: String, created: Instant, expires: Instant?) {
            key_id = String(keySHA256.prefix(12))
            self.consumer = consumer
            key_sha256 = keySHA256
            created_unix_ns = created.nanoseconds
            expires_unix_ns = expires?.nanoseconds
        }
    }

    /// One change, as the admin tools send it.
    public enum Change: Codable, Hashable, Sendable {
        case setConsumer(ConsumerRecord)
        /// Deletes the consumer and every key of it.
        case deleteConsumer(id: String)
        /// A new key; `consumer` must exist (or be set in the same change with `tier`).
        case createKey(KeyRecord, tier: String?)
        case revokeKey(keyID: String)
    }

    public var consumers: [ConsumerRecord] = []
    public var keys: [KeyRecord] = []
    public init() {}

    /// Most keys and consumers one directory holds (it travels in one frame).
    public static let maxEntries = 2_000

    /// Applies `change` as one step; returns what it did, in one line (the version's `change`
    /// in the history). `tiers`: the tiers a consumer may name; `maxBytes`: the most the
    /// encoded directory may take (it travels in one frame). Bad input changes nothing.
    public mutating func apply(_ change: Change, tiers: Set<String>, maxBytes: Int = .max) throws(AllotError) -> String {
        var next = self
        let summary: String
        switch change {
        case .setConsumer(let c):
            try Self.check(c, tiers: tiers)
            let old = next.consumers.first { $0.id == c.id }
            next.consumers.removeAll { $0.id == c.id }
            next.consumers.append(c)
            summary = old.map { "consumers set \(c.id): \(Self.describe($0)) -> \(Self.describe(c))" } ?? "consumers set \(c.id): \(Self.describe(c))"
        case .deleteConsumer(let id):
            guard next.consumers.contains(where: { $0.id == id }) else {
                throw AllotError(.invalidSettings, "consumer '\(id)' is not in the directory")
            }
            let keys = next.keys.filter { $0.consumer == id }.map(\.key_id)
            next.consumers.removeAll { $0.id == id }
            next.keys.removeAll { $0.consumer == id }
            summary = "consumers delete \(id)" + (keys.isEmpty ? "" : " and its keys \(keys.joined(separator: ", "))")
        case .createKey(let k, let tier):
            guard k.key_sha256.count == 64, k.key_sha256.allSatisfy({ $0.isHexDigit && !$0.isUppercase }),
                  k.key_id == String(k.key_sha256.prefix(12)) else {
                throw AllotError(.invalidSettings, "key_sha256 must be 64 lowercase hex digits, and key_id its first 12")
            }
            guard !next.keys.contains(where: { $0.key_sha256 == k.key_sha256 || $0.key_id == k.key_id }) else {
                throw AllotError(.invalidSettings, "a key with id \(k.key_id) is already in the directory")
            }
            if let e = k.expires_unix_ns, e <= k.created_unix_ns {
                throw AllotError(.invalidSettings, "the key would expire before it is created")
            }
            var made = ""
            if let tier {
                let existing = next.consumers.first { $0.id == k.consumer }
                var c = existing ?? ConsumerRecord(id: k.consumer, tier: tier)
                c.tier = tier
                try Self.check(c, tiers: tiers)
                next.consumers.removeAll { $0.id == c.id }
                next.consumers.append(c)
                if existing?.tier != tier { made = " (consumer \(Self.describe(c)))" }
            }
            guard next.consumers.contains(where: { $0.id == k.consumer }) else {
                throw AllotError(.invalidSettings, "consumer '\(k.consumer)' is not in the directory: name its tier (--tier) or run allot consumers set first")
            }
            next.keys.append(k)
            let expiry = k.expires_unix_ns.map { " expires \(Instant(nanoseconds: $0))" } ?? ""
            summary = "keys create \(k.key_id) for \(k.consumer)\(expiry)\(made)"
        case .revokeKey(let id):
            guard let k = next.keys.first(where: { $0.key_id == id }) else {
                throw AllotError(.invalidSettings, "no key with id '\(id)' in the directory (allot keys list)")
            }
            next.keys.removeAll { $0.key_id == id }
            summary = "keys revoke \(id) of \(k.consumer)"
        }
        guard next.consumers.count + next.keys.count <= Self.maxEntries else {
            throw AllotError(.invalidSettings, "the directory would hold more than \(Self.maxEntries) consumers and keys")
        }
        next.consumers.sort { $0.id < $1.id }
        next.keys.sort { $0.key_id < $1.key_id }
        let size = next.encoded().count
        guard size <= maxBytes else {
            throw AllotError(.invalidSettings, "the directory would take \(size) bytes, more than the \(maxBytes) one frame can carry (limits.max_frame_bytes)")
        }
        self = next
        return summary
    }

    static func check(_ c: ConsumerRecord, tiers: Set<String>) throws(AllotError) {
        for (name, v) in [("id", c.id), ("tier", c.tier), ("team", c.team), ("tenant", c.tenant)] as [(String, String?)] {
            guard let v else { continue }
            guard TierCatalog.acceptable(v), !v.contains("/"), !v.contains("%"), !v.contains("?"), !v.contains("#") else {
                throw AllotError(.invalidSettings, "consumer \(name) must be 1 to \(TierCatalog.maxValueBytes) bytes of printable ASCII without ',', '=', '/', '%', '?', '#' or spaces")
            }
        }
        guard tiers.contains(c.tier) else {
            throw AllotError(.unknownTier, "tier '\(c.tier)' is not configured (known: \(tiers.sorted().joined(separator: ", ")))")
        }
        if let d = c.max_chain_depth, d < 0 { throw AllotError(.invalidSettings, "max_chain_depth must be 0 or more") }
    }

    static func describe(_ c: ConsumerRecord) -> String {
        "tier \(c.tier)" + (c.team.map { ", team \($0)" } ?? "") + (c.tenant.map { ", tenant \($0)" } ?? "")
            + (c.max_chain_depth.map { ", max_chain_depth \($0)" } ?? "")
    }

    /// A new API key (`sk-allot-` and 64 random hex digits) and its SHA-256 (hex).
    public static func newKey() -> (key: String, sha256: String) {
        var random = SystemRandomNumberGenerator()
        let key = "sk-allot-" + (0..<32).map { _ in String(UInt8.random(in: 0...255, using: &random), radix: 16).leftPadded }.joined()
        return (key, sha256(key))
    }

    public static func sha256(_ key: String) -> String {
        SHA256.hash(data: Data(key.utf8)).map { String($0, radix: 16).leftPadded }.joined()
    }

    // MARK: encoding

    public func encoded() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return (try? e.encode(self)) ?? Data()
    }

    public init(decoding data: Data) throws(AllotError) {
        do { self = try JSONDecoder().decode(Directory.self, from: data) } catch {
            throw AllotError(.invalidSettings, "the directory document cannot be read: \(error)")
        }
    }

    public static func encode(_ change: Change) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: (try? e.encode(change)) ?? Data(), as: UTF8.self)
    }

    public static func decode(change text: String) throws(AllotError) -> Change {
        do { return try JSONDecoder().decode(Change.self, from: Data(text.utf8)) } catch {
            throw AllotError(.invalidSettings, "the change cannot be read: \(error)")
        }
    }
}

private extension String {
    /// Two hex digits.
    var leftPadded: String { count == 1 ? "0" + self : self }
}
