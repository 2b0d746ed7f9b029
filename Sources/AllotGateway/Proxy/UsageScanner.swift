import AllotCore
import Foundation

/// Token counts an upstream reported.
public struct Usage: Hashable, Sendable {
    /// Every input token, cached ones included.
    public var input: Int64
    public var output: Int64
    /// Input tokens served from the upstream's prompt cache (priced at the cached rate).
    public var cached: Int64
    /// Input tokens written to Anthropic's prompt cache (priced at the cache-write rate), and
    /// of those the ones written for an hour (`cache_creation.ephemeral_1h_input_tokens`).
    public var cacheWrite: Int64
    public var cacheWriteHour: Int64
    public init(input: Int64, output: Int64, cached: Int64 = 0, cacheWrite: Int64 = 0, cacheWriteHour: Int64 = 0) {
        self.input = input
        self.output = output
        self.cached = cached
        self.cacheWrite = cacheWrite
        self.cacheWriteHour = cacheWriteHour
    }

    /// A count from an upstream: a non-negative integer, nil otherwise.
    static func count(_ v: Any?) -> Int64? {
        guard let v, !RequestPlan.isBoolean(v), let n = v as? NSNumber, case let d = n.doubleValue,
              d >= 0, d < 9.2e18, d == d.rounded() else { return nil }
        return Int64(d)
    }

    /// Reads a `usage` object in any of the shapes: Chat Completions, Completions and
    /// Embeddings (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`),
    /// Responses (`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`),
    /// Anthropic Messages (`input_tokens` without the cache, `cache_creation_input_tokens`,
    /// `cache_read_input_tokens`, `output_tokens`). Nil when absent or malformed.
    static func from(usage u: [String: Any], anthropic: Bool) -> Usage? {
        if let p = count(u["prompt_tokens"]) {
            guard let c = u["completion_tokens"] == nil ? 0 : count(u["completion_tokens"]) else { return nil }
            let cached = count((u["prompt_tokens_details"] as? [String: Any])?["cached_tokens"]) ?? 0
            return Usage(input: p, output: c, cached: min(cached, p))
        }
        guard let i = count(u["input_tokens"]), let o = u["output_tokens"] == nil ? 0 : count(u["output_tokens"]) else { return nil }
        if anthropic {
            let created = count(u["cache_creation_input_tokens"]) ?? 0
            let read = count(u["cache_read_input_tokens"]) ?? 0
            let hour = count((u["cache_creation"] as? [String: Any])?["ephemeral_1h_input_tokens"]) ?? 0
            return Usage(input: Checked.sum(i, created, read), output: o, cached: read, cacheWrite: created,
                         cacheWriteHour: min(hour, created))
        }
        let cached = count((u["input_tokens_details"] as? [String: Any])?["cached_tokens"]) ?? 0
        return Usage(input: i, output: o, cached: min(cached, i))
    }

    /// Reads `usage` from a whole response object. Nil when absent or malformed.
    static func from(json object: Any, anthropic: Bool = false) -> Usage? {
        guard let o = object as? [String: Any], let u = o["usage"] as? [String: Any] else { return nil }
        return from(usage: u, anthropic: anthropic)
    }
}

/// Watches a response body go by (without holding it back) and picks out the `usage` the
/// upstream reports: from the whole JSON object of a plain response, or from the
/// `data: {...}` event that carries it in a server-sent-event stream.
public struct UsageScanner: Sendable {
    public let streaming: Bool
    public let api: ModelPrice.API
    /// A plain response larger than this is not kept whole for parsing (it still streams
    /// through); its usage is then read from the last `tailBytes` (the APIs put `usage` at
    /// the end: a 2,048-input embeddings answer runs to tens of MiB).
    public let maxKeptBytes: Int
    static let tailBytes = 64 << 10
    private var kept = Data()
    private var overflow = false
    private var line = Data()
    public private(set) var usage: Usage?
    /// A stream's `data: [DONE]` was seen.
    public private(set) var sawDone = false

    /// Anthropic streams: the input from `message_start`, the cumulative output from the
    /// latest `message_delta` (usage is complete only once a delta came).
    private var anthropicStart: Usage?

    public init(streaming: Bool, api: ModelPrice.API = .openai, maxKeptBytes: Int = 4 << 20) {
        self.streaming = streaming
        self.api = api
        self.maxKeptBytes = maxKeptBytes
    }

    public mutating func consume(_ chunk: some Collection<UInt8>) {
        if !streaming {
            kept.append(contentsOf: chunk)
            if kept.count > maxKeptBytes || overflow && kept.count > 2 * Self.tailBytes {
                overflow = true
                kept.removeFirst(max(0, kept.count - Self.tailBytes))
            }
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
            usage = Usage.from(json: object, anthropic: api == .anthropic)
        } else if overflow {
            usage = Self.lastUsage(in: kept, anthropic: api == .anthropic)
        }
    }

    /// The last `"usage": {…}` object in `tail` that reads as usage. A `"usage"` inside a JSON
    /// string is escaped (`\"usage\"`), so only a key can match; the answers' own `usage` is
    /// their last one.
    static func lastUsage(in tail: Data, anthropic: Bool) -> Usage? {
        let bytes = [UInt8](tail)
        let key = Array("\"usage\"".utf8)
        var end = bytes.count
        while let r = bytes[..<end].lastRange(of: key) {
            end = r.lowerBound
            guard r.lowerBound == 0 || bytes[r.lowerBound - 1] != UInt8(ascii: "\\") else { continue }
            var i = r.upperBound
            while i < bytes.count, [UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"), UInt8(ascii: ":")].contains(bytes[i]) { i += 1 }
            guard i < bytes.count, bytes[i] == UInt8(ascii: "{") else { continue }
            // The object's extent: braces balanced outside strings.
            var depth = 0, inString = false, escaped = false, j = i
            while j < bytes.count {
                let b = bytes[j]
                if inString {
                    if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                } else if b == UInt8(ascii: "\"") { inString = true
                } else if b == UInt8(ascii: "{") { depth += 1
                } else if b == UInt8(ascii: "}") { depth -= 1; if depth == 0 { break } }
                j += 1
            }
            guard j < bytes.count, let o = try? JSONSerialization.jsonObject(with: Data(bytes[i...j])) as? [String: Any],
                  let u = Usage.from(usage: o, anthropic: anthropic) else { continue }
            return u
        }
        return nil
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
              let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else { return }
        switch object["type"] as? String {
        case "message_start" where api == .anthropic:
            // Input (and cache) counts; the output so far is not final.
            if let u = (object["message"] as? [String: Any])?["usage"] as? [String: Any] {
                anthropicStart = Usage.from(usage: u, anthropic: true)
            }
        case "message_delta" where api == .anthropic:
            guard let u = object["usage"] as? [String: Any], let out = Usage.count(u["output_tokens"]) else { return }
            var total = anthropicStart ?? Usage(input: 0, output: 0)
            // Newer deltas repeat the input counts; take them when present.
            if u["input_tokens"] != nil, let full = Usage.from(usage: u, anthropic: true) {
                total.input = full.input; total.cached = full.cached
                total.cacheWrite = full.cacheWrite; total.cacheWriteHour = full.cacheWriteHour
            }
            total.output = out
            // Without a `message_start` the input is unknown: no usage (the bound is charged).
            if anthropicStart != nil || u["input_tokens"] != nil { usage = total }
        case "response.completed", "response.incomplete", "response.failed":
            // Responses streams: usage sits in the terminal event's `response`.
            if let u = (object["response"] as? [String: Any])?["usage"] as? [String: Any], let parsed = Usage.from(usage: u, anthropic: false) {
                usage = parsed
            }
        case let t? where t.hasPrefix("response.") || t.hasPrefix("message_"):
            return // `response.created` and the like carry no final usage
        default:
            if let u = Usage.from(json: object, anthropic: api == .anthropic) { usage = u }
        }
    }
}

/// Removes, from a Chat Completions or Completions stream, the usage chunk (`choices: []`)
/// that the gateway asked for on behalf of a client that did not: that client's parser may
/// not expect a chunk without choices. Events pass through whole, as soon as they are complete.
public struct AddedUsageFilter: Sendable {
    private var pending: [UInt8] = []
    /// Where the search for the end of the pending event resumes (an event split into many
    /// chunks is scanned once, not once per chunk).
    private var scanned = 0

    public init() {}

    /// The complete events of `chunk` (and of what came before it) minus the usage chunk.
    public mutating func pass(_ chunk: some Collection<UInt8>) -> [UInt8] {
        pending.append(contentsOf: chunk)
        var out: [UInt8] = []
        var start = 0
        var i = max(0, scanned - 2)
        // Events end at a blank line ("\n\n"; "\r\n\r\n" ends with "\n\r\n").
        while i + 1 < pending.count {
            if pending[i] == UInt8(ascii: "\n") && (pending[i + 1] == UInt8(ascii: "\n")
                || pending[i + 1] == UInt8(ascii: "\r") && i + 2 < pending.count && pending[i + 2] == UInt8(ascii: "\n")) {
                let end = pending[i + 1] == UInt8(ascii: "\n") ? i + 2 : i + 3
                let event = pending[start..<end]
                if !Self.isAddedUsage(event) { out.append(contentsOf: event) }
                start = end
                i = end
            } else {
                i += 1
            }
        }
        pending.removeFirst(start)
        scanned = pending.count
        return out
    }

    /// Whatever is left at the end of the stream (an unterminated last event).
    public mutating func finish() -> [UInt8] {
        defer { pending = []; scanned = 0 }
        return Self.isAddedUsage(pending[...]) ? [] : pending
    }

    static func isAddedUsage(_ event: ArraySlice<UInt8>) -> Bool {
        guard event.count > 16, event.firstRange(of: Array("\"usage\"".utf8)) != nil else { return false }
        for line in event.split(separator: UInt8(ascii: "\n")) {
            var l = line
            if l.last == UInt8(ascii: "\r") { l = l.dropLast() }
            guard l.starts(with: "data:".utf8) else { continue }
            let payload = l.dropFirst(5)
            guard let o = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else { return false }
            return (o["choices"] as? [Any])?.isEmpty == true && o["usage"] is [String: Any]
        }
        return false
    }
}
