import Foundation
import Logging
import Synchronization

/// `--log-format json`: one JSON object per line on standard error — `time` (RFC 3339, UTC,
/// microseconds), `level`, `label`, `message`, the metadata's keys at the top level (nested
/// metadata as objects and arrays), and `source`. Keys a handler writes itself win over
/// metadata of the same name. Lines are written whole (one `write` each, under a lock).
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let write: @Sendable (Data) -> Void

    static let lock = Mutex(())

    public init(label: String, write: @escaping @Sendable (Data) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.write = write
    }

    public static let standardError: @Sendable (Data) -> Void = { data in
        // (A log line that cannot be written is dropped: a closed or full stderr must not stop
        // the process.)
        lock.withLock { _ in try? FileHandle.standardError.write(contentsOf: data) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var object: [String: Any] = [:]
        for (k, v) in metadata.merging(explicit ?? [:], uniquingKeysWith: { _, new in new }) { object[k] = Self.json(v) }
        object["time"] = Self.timestamp(Date())
        object["level"] = level.rawValue
        object["label"] = label
        object["message"] = message.description
        object["source"] = source
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        data.append(0x0a)
        write(data)
    }

    static func json(_ v: Logger.Metadata.Value) -> Any {
        switch v {
        case .string(let s): s
        case .stringConvertible(let c): c.description
        case .array(let a): a.map(json)
        case .dictionary(let d): d.mapValues(json)
        }
    }

    /// `2026-12-07T10:04:52.123456Z`.
    static func timestamp(_ d: Date) -> String {
        let seconds = d.timeIntervalSince1970
        let whole = floor(seconds)
        var t = time_t(whole)
        var parts = tm()
        gmtime_r(&t, &parts)
        let micros = Int((seconds - whole) * 1_000_000)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), micros)
    }
}
