import AllotCore
import Crypto
import Foundation

/// Checks an audit trail's chain and sums what it recorded.
public enum AuditVerifier {
    /// Where the chain breaks.
    public struct Break: Hashable, Sendable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var reason: String
        public var description: String { "\(file):\(line): \(reason)" }
    }

    public struct Report: Sendable {
        public var records: Int
        /// The first broken record, or nil when the whole chain holds.
        public var firstBreak: Break?
    }

    /// Reads `files` in the order given (the chain runs across them) and checks every link,
    /// as HMAC-SHA-256 under `key` (SHA-256 without one). With the `head` the node reported to
    /// the ledger, also that the trail still holds that record, unchanged, where it was: records
    /// cut off the end, or a deleted newest file, are found.
    public static func verify(_ files: [URL], key: SymmetricKey? = nil, head: AuditHead? = nil) -> Report {
        let report = chain(files, key: key)
        guard let head, report.firstBreak == nil else { return report }
        guard let file = files.first(where: { $0.lastPathComponent == head.file }) else {
            return Report(records: report.records, firstBreak: Break(file: head.file, line: 0,
                reason: "the ledger's audit head is record \(head.sequence) in \(head.file), and that file is missing (deleted?)"))
        }
        let lines = ((try? Data(contentsOf: file)) ?? Data()).split(separator: UInt8(ascii: "\n"))
        for (i, line) in lines.enumerated() {
            guard let r = try? JSONDecoder().decode(AuditRecord.self, from: Data(line)), r.seq == head.sequence else { continue }
            guard AuditLog.link(Data(line), key: key) == head.mac else {
                return Report(records: report.records, firstBreak: Break(file: file.path, line: i + 1,
                    reason: "record \(head.sequence) is not the one the ledger's audit head names (rewritten)"))
            }
            return report
        }
        return Report(records: report.records, firstBreak: Break(file: file.path, line: lines.count,
            reason: "records cut off the end: the ledger's audit head is record \(head.sequence), the trail ends before it"))
    }

    static func chain(_ files: [URL], key: SymmetricKey?) -> Report {
        var prev = AuditLog.genesis
        var seq: Int64 = 0
        var count = 0
        let decoder = JSONDecoder()
        for file in files {
            guard let data = try? Data(contentsOf: file) else {
                return Report(records: count, firstBreak: Break(file: file.path, line: 0, reason: "cannot read the file"))
            }
            for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
                let n = i + 1
                guard let r = try? decoder.decode(AuditRecord.self, from: Data(line)) else {
                    return Report(records: count, firstBreak: Break(file: file.path, line: n, reason: "not an audit record"))
                }
                guard r.prev == prev else {
                    return Report(records: count, firstBreak: Break(file: file.path, line: n,
                                                                    reason: "chain broken: prev does not match the previous record (a record was changed, removed or reordered)"))
                }
                guard r.seq == seq + 1 else {
                    return Report(records: count, firstBreak: Break(file: file.path, line: n, reason: "sequence \(r.seq) after \(seq)"))
                }
                prev = AuditLog.link(Data(line), key: key)
                seq = r.seq
                count += 1
            }
        }
        return Report(records: count, firstBreak: nil)
    }

    /// Consumption per consumer, tier and model: what `allot audit summary` prints.
    public struct Totals: Hashable, Sendable, Codable {
        public var admitted = 0
        public var denied = 0
        public var inputTokens: Int64 = 0
        public var outputTokens: Int64 = 0
        public var costMicroDollars: Int64 = 0
        public init() {}
    }

    public static func summary(_ files: [URL]) throws -> [String: Totals] {
        var out: [String: Totals] = [:]
        let decoder = JSONDecoder()
        for file in files {
            for line in try Data(contentsOf: file).split(separator: UInt8(ascii: "\n")) {
                let r = try decoder.decode(AuditRecord.self, from: Data(line))
                if r.decision == "audit_cut" { continue }
                for key in ["consumer=\(r.consumer)", "tier=\(r.tier)", "model=\(r.model ?? "-")"] {
                    var t = out[key] ?? Totals()
                    if r.decision == "admit" { t.admitted += 1 } else { t.denied += 1 }
                    t.inputTokens += r.inputTokens
                    t.outputTokens += r.outputTokens
                    t.costMicroDollars += r.costMicroDollars
                    out[key] = t
                }
            }
        }
        return out
    }
}
