import Crypto
import Foundation
import Synchronization

/// The hash-chained audit trail: `<dir>/audit-000001.jsonl`, `audit-000002.jsonl`, ... Each
/// line is one `AuditRecord` whose `prev` is the SHA-256 of the previous line's bytes (the
/// first line of all: 64 zeros), so removing, reordering or editing a line breaks the chain.
/// A file that reaches `maxBytes` is closed and the chain continues in the next one.
public final class AuditLog: Sendable {
    public static let genesis = String(repeating: "0", count: 64)

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
    public init(directory: URL, maxBytes: Int = 64 << 20) throws {
        self.directory = directory
        self.maxBytes = maxBytes
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let files = Self.files(in: directory)
        var seq: Int64 = 0, prev = Self.genesis, index = 1, bytes = 0
        if let last = files.last {
            index = Self.index(of: last) ?? files.count
            let data = try Data(contentsOf: last)
            bytes = data.count
            if let line = data.split(separator: UInt8(ascii: "\n")).last {
                let record = try JSONDecoder().decode(AuditRecord.self, from: Data(line))
                seq = record.seq
                prev = Self.hash(Data(line))
            }
        }
        state = Mutex(State(handle: nil, fileIndex: index, bytes: bytes, seq: seq, prev: prev))
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
            s.prev = Self.hash(line)
            return r
        }
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
}
