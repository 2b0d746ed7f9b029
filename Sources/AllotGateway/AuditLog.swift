import AllotCore
import AllotTransport
import Crypto
import Foundation
import Synchronization

/// The chained audit trail: `<dir>/audit-000001.jsonl`, `audit-000002.jsonl`, ... Each line
/// is one `AuditRecord` whose `prev` is the HMAC-SHA-256, under the trail's key, of the
/// previous line's bytes (the first line of all: 64 zeros), so removing, reordering or editing
/// a line breaks the chain, and nobody without the key can write a chain that verifies.
/// Without a key (`gateway.audit_key_file` unset) the link is a plain SHA-256: it finds
/// accidents, not someone who rewrites the tail. A file that reaches `maxBytes` is closed and
/// the chain continues in the next one. A torn last line (a crash mid-write) is cut at start-up
/// and the cut recorded as a record of its own (`decision: audit_cut`).
public final class AuditLog: Sendable {
    public static let genesis = String(repeating: "0", count: 64)
    public let key: SymmetricKey?

    private struct State: Sendable {
        var handle: FileHandle?
        var fileIndex: Int
        var bytes: Int
        var seq: Int64
        var prev: String
    }

    public let directory: URL
    public let maxBytes: Int
    private let state: Mutex<State>

    /// Opens (or continues) the trail in `directory`: appends to its last file, chained to its
    /// last line.
    public init(directory: URL, maxBytes: Int = 64 << 20, key: SymmetricKey? = nil, node: String = "") throws {
        self.directory = directory
        self.maxBytes = maxBytes
        self.key = key
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let files = Self.files(in: directory)
        var seq: Int64 = 0, prev = Self.genesis, index = 1, bytes = 0
        var cut: (file: String, bytes: Int)?
        if let last = files.last {
            index = Self.index(of: last) ?? files.count
            var data = try Data(contentsOf: last)
            // A torn tail (a crash mid-write): the bytes after the last newline are cut, and the cut
            // recorded below. A whole line that is not a record is damage, not a tear: refused.
            let whole = data.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
            if whole < data.count {
                cut = (last.lastPathComponent, data.count - whole)
                let handle = try FileHandle(forWritingTo: last)
                try handle.truncate(atOffset: UInt64(whole))
                try handle.close()
                data = data.prefix(whole)
            }
            bytes = data.count
            // The chain goes on from the last record: in this file, or (this one empty after a
            // cut right after a rotation) in the one before.
            for file in files.reversed() {
                let content = file == last ? data : try Data(contentsOf: file)
                guard let line = content.split(separator: UInt8(ascii: "\n")).last else { continue }
                guard let record = try? JSONDecoder().decode(AuditRecord.self, from: Data(line)) else {
                    throw AllotAuditError(.corruptTrail, "\(file.path): its last line is not an audit record; check it with allot audit verify before starting")
                }
                seq = record.seq
                prev = Self.link(Data(line), key: key)
                break
            }
        }
        state = Mutex(State(handle: nil, fileIndex: index, bytes: bytes, seq: seq, prev: prev))
        if let cut {
            try append(AuditRecord.cut(bytes: cut.bytes, file: cut.file, node: node, time: GatewayCore.rfc3339(WallClock.now())))
        }
    }

    /// The trail's key from `path`: at least 32 bytes, in a file only its owner can read (0600).
    public static func loadKey(path: String) throws -> SymmetricKey {
        // A Kubernetes Secret mounts the key as a symlink: the mode that counts is the file's.
        let attributes = try FileManager.default.attributesOfItem(atPath: URL(fileURLWithPath: path).resolvingSymlinksInPath().path)
        let mode = (attributes[.posixPermissions] as? Int) ?? 0o777
        guard mode & 0o077 == 0 else {
            throw AllotAuditError(.keyFile, "\(path) is readable by others (mode \(String(mode, radix: 8))): chmod 600 it")
        }
        let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let bytes = Hex.decode(text) ?? Array(text.utf8)
        guard bytes.count >= 32 else { throw AllotAuditError(.keyFile, "\(path) holds \(bytes.count) bytes of key; at least 32 (allot audit keygen makes one)") }
        return SymmetricKey(data: bytes)
    }

    /// Writes a new random key (64 hex digits) to `path`, mode 0600; refuses to overwrite.
    public static func makeKey(path: String) throws {
        guard !FileManager.default.fileExists(atPath: path) else { throw AllotAuditError(.keyFile, "\(path) exists; not overwriting a key") }
        let key = SymmetricKey(size: .bits256).withUnsafeBytes { Hex.encode($0) }
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw AllotAuditError(.keyFile, "cannot create \(path)")
        }
        try Data((key + "\n").utf8).write(to: URL(fileURLWithPath: path))
    }

    /// Appends a record (its `seq` and `prev` are set here) and returns the line written.
    @discardableResult
    public func append(_ record: AuditRecord) throws -> AuditRecord {
        try state.withLock { s in
            var r = record
            s.seq += 1
            r.seq = s.seq
            r.prev = s.prev
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let line = try encoder.encode(r)
            let full = s.bytes > 0 && s.bytes + line.count + 1 > maxBytes
            if s.handle == nil || full {
                if s.handle != nil {
                    try s.handle?.close()
                    s.fileIndex += 1
                    s.bytes = 0
                }
                let url = directory.appendingPathComponent(Self.name(s.fileIndex))
                if !FileManager.default.fileExists(atPath: url.path) {
                    _ = FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o640])
                }
                s.handle = try FileHandle(forWritingTo: url)
                try s.handle!.seekToEnd()
            }
            try s.handle!.write(contentsOf: line + Data([UInt8(ascii: "\n")]))
            s.bytes += line.count + 1
            s.prev = Self.link(line, key: key)
            return r
        }
    }

    /// The last record written (file, sequence) and the link the next one will carry; nil
    /// before the first record.
    public var head: AuditHead? {
        state.withLock { s in s.seq > 0 ? AuditHead(file: Self.name(s.fileIndex), sequence: s.seq, mac: s.prev) : nil }
    }

    public func close() throws {
        try state.withLock { s in
            try s.handle?.close()
            s.handle = nil
        }
    }

    /// The trail's files in order.
    public static func files(in dir: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasPrefix("audit-") && $0.hasSuffix(".jsonl") }.sorted()
            .map { dir.appendingPathComponent($0) }
    }

    static func name(_ i: Int) -> String { String(format: "audit-%06d.jsonl", i) }
    static func index(of url: URL) -> Int? { Int(url.lastPathComponent.dropFirst(6).dropLast(6)) }

    public static func hash(_ line: Data) -> String {
        Hex.encode(SHA256.hash(data: line))
    }

    /// What the next record's `prev` holds for `line`: its HMAC-SHA-256 under `key`, or its
    /// SHA-256 without one.
    public static func link(_ line: Data, key: SymmetricKey?) -> String {
        guard let key else { return hash(line) }
        return Hex.encode(HMAC<SHA256>.authenticationCode(for: line, using: key))
    }
}

/// A problem with the audit trail's key or files, in the one error shape (`CodedError`).
public typealias AllotAuditError = CodedError<AuditErrorCode>

public enum AuditErrorCode: String, ErrorCode {
    /// A trail file does not end in an audit record.
    case corruptTrail = "corrupt_trail"
    /// The key file is missing, too short, too open, or would be overwritten.
    case keyFile = "key_file"
}
