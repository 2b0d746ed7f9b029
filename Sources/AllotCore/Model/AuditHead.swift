/// The head of a gateway's audit trail: its last record (file, sequence) and the link the next
/// record carries (the HMAC-SHA-256 of that record's line, hex).
public struct AuditHead: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var sequence: Int64
    public var mac: String
    public init(file: String, sequence: Int64, mac: String) {
        self.file = file
        self.sequence = sequence
        self.mac = mac
    }
    public var description: String { "\(file) #\(sequence) \(mac.prefix(12))…" }

    /// A head a node may report: a trail file's name, a sequence ≥ 1, 64 hex digits.
    public var isWellFormed: Bool {
        file.hasPrefix("audit-") && file.hasSuffix(".jsonl") && file.utf8.count <= 64 && !file.contains("/")
            && sequence >= 1 && mac.utf8.count == 64 && mac.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}
