import Foundation

/// Token counts an upstream reported.
public struct Usage: Hashable, Sendable {
    public var input: Int64
    public var output: Int64
    public init(input: Int64, output: Int64) {
        self.input = input
        self.output = output
    }

    /// Reads `usage` from a response object (`prompt_tokens`, `completion_tokens`; for
    /// embeddings `prompt_tokens` alone). Nil when absent or malformed.
    static func from(json object: Any) -> Usage? {
        guard let o = object as? [String: Any], let u = o["usage"] as? [String: Any],
              let p = (u["prompt_tokens"] as? NSNumber)?.int64Value, p >= 0 else { return nil }
        let c = (u["completion_tokens"] as? NSNumber)?.int64Value ?? 0
        return c >= 0 ? Usage(input: p, output: c) : nil
    }
}

/// Watches a response body go by (without holding it back) and picks out the `usage` the
/// upstream reports: from the whole JSON object of a plain response, or from the
/// `data: {...}` event that carries it in a server-sent-event stream.
public struct UsageScanner: Sendable {
    public let streaming: Bool
    /// A plain response larger than this is not kept for parsing (it still streams through).
    public let maxKeptBytes: Int
    private var kept = Data()
    private var overflow = false
    private var line = Data()
    public private(set) var usage: Usage?
    /// A stream's `data: [DONE]` was seen.
    public private(set) var sawDone = false

    public init(streaming: Bool, maxKeptBytes: Int = 4 << 20) {
        self.streaming = streaming
        self.maxKeptBytes = maxKeptBytes
    }

    public mutating func consume(_ chunk: some Collection<UInt8>) {
        if !streaming {
            guard !overflow else { return }
            if kept.count + chunk.count > maxKeptBytes { overflow = true; kept = Data(); return }
            kept.append(contentsOf: chunk)
            return
        }
        for b in chunk {
            if b == UInt8(ascii: "\n") {
                event(line)
                line.removeAll(keepingCapacity: true)
            } else if line.count < maxKeptBytes {
                line.append(b)
            }
        }
    }

    /// Call at the end of the body.
    public mutating func finish() {
        if streaming {
            if !line.isEmpty { event(line); line = Data() }
        } else if !overflow, let object = try? JSONSerialization.jsonObject(with: kept) {
            usage = Usage.from(json: object)
        }
    }

    private mutating func event(_ raw: Data) {
        var l = raw
        if l.last == UInt8(ascii: "\r") { l.removeLast() }
        let prefix = Data("data:".utf8)
        guard l.starts(with: prefix) else { return }
        let payload = l.dropFirst(prefix.count).drop { $0 == UInt8(ascii: " ") }
        if payload.elementsEqual("[DONE]".utf8) { sawDone = true; return }
        // Only the event that reports usage is worth decoding.
        guard payload.count > 8, payload.firstRange(of: Data("\"usage\"".utf8)) != nil,
              let object = try? JSONSerialization.jsonObject(with: Data(payload)), let u = Usage.from(json: object) else { return }
        usage = u
    }
}
