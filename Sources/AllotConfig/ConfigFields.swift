import AllotCore
import Foundation
import Yams

/// How the deployment file spells its values: durations, addresses, budgets, times of day,
/// paths relative to the file. Every parser names the field in its error.
public enum ConfigFields {
    /// A budget as the file writes it (`budgets[]`, and `tiers[].templates[]` with `name`).
    public struct Budget: Decodable, Sendable {
        public var id: String?
        public var name: String?
        public var scope: [String]?
        public var unit: String?
        public var kind: String?
        public var limit: Int64?
        public var period: String?
        public var burst: Int64?
        public var allowance: Int64?
        public var window: String?
        public var time_zone: String?
        public var reset: String?
        public var fail_mode: String?
        public var static_allowance: Int64?
        public var reach: String?
        /// Shadow mode: decided, never applied (the gateway's; `DeploymentConfig.shadow`).
        public var shadow: Bool?
        /// Soft limits: percents of the limit (`[80, 95]`) whose crossing, once per window,
        /// a coordinator reports (`DeploymentConfig.softLimits`).
        public var soft_limits: [Int]?
    }

    /// `soft_limits`: whole percents 1...100, each once, for a quota or rate budget.
    public static func softLimits(_ list: [Int]?, kind: BudgetKind?, field: String) throws(AllotError) -> [Int]? {
        guard let list else { return nil }
        for p in list where !(1...100).contains(p) {
            throw AllotError(.invalidSettings, "\(field).soft_limits: \(p) is not a percent of the limit from 1 to 100 (e.g. [80, 95])")
        }
        guard Set(list).count == list.count else {
            throw AllotError(.invalidSettings, "\(field).soft_limits: \(list) names a percent twice")
        }
        if case .concurrency? = kind {
            throw AllotError(.invalidSettings, "\(field).soft_limits: a concurrency budget has no window to count in; soft limits apply to quota and rate budgets")
        }
        return list.sorted()
    }

    /// Decodes `yaml` as `T`, a decoding error named by its path.
    public static func decode<T: Decodable>(_ type: T.Type, _ yaml: String) throws(AllotError) -> T {
        do {
            return try YAMLDecoder().decode(T.self, from: yaml)
        } catch {
            throw AllotError(.invalidSettings, "the configuration is not valid YAML for allot: \(describe(error))")
        }
    }

    public static func budget(_ b: Budget, field: String) throws(AllotError) -> BudgetSpec {
        guard let id = b.id, !id.isEmpty else { throw AllotError(.invalidSettings, "\(field).id is missing") }
        let unit = try Unit(parsing: b.unit ?? "requests")
        let kind: BudgetKind
        switch b.kind ?? "" {
        case "rate":
            guard let limit = b.limit else { throw AllotError(.invalidLimit, "\(field).limit is missing for a rate budget") }
            kind = .rate(limit: limit, period: try duration(b.period ?? "1s", field: "\(field).period"), burst: b.burst ?? limit)
        case "quota":
            guard let allowance = b.allowance else { throw AllotError(.invalidLimit, "\(field).allowance is missing for a quota budget") }
            guard let period = CalendarWindow.Period(rawValue: b.window ?? "day") else {
                throw AllotError(.invalidSettings, "\(field).window must be minute, hour, day or month (got \(b.window ?? ""))")
            }
            kind = .quota(allowance: allowance, window: try CalendarWindow(period, timeZone: b.time_zone ?? "UTC",
                                                                           resetMinute: try resetMinute(b.reset ?? "00:00", field: "\(field).reset")))
        case "concurrency":
            guard let limit = b.limit else { throw AllotError(.invalidLimit, "\(field).limit is missing for a concurrency budget") }
            kind = .concurrency(limit: limit)
        default:
            throw AllotError(.unknownKind, "\(field).kind must be rate, quota or concurrency (got '\(b.kind ?? "")')")
        }
        let failMode: FailMode
        switch b.fail_mode ?? "closed" {
        case "closed": failMode = .closed
        case "open": failMode = .open
        case "static": failMode = .static(allowancePerTTL: b.static_allowance ?? 0)
        default: throw AllotError(.invalidSettings, "\(field).fail_mode must be closed, open or static (got '\(b.fail_mode ?? "")')")
        }
        guard let reach = Reach(rawValue: b.reach ?? "regional") else {
            throw AllotError(.invalidSettings, "\(field).reach must be regional or global (got '\(b.reach ?? "")')")
        }
        do {
            return try BudgetSpec(id: BudgetID(id), unit: unit, kind: kind, failMode: failMode, reach: reach)
        } catch {
            throw AllotError(error.code, "\(field): \(error.message)")
        }
    }

    /// `250ms`, `10s`, `5m`, `1h`, `1d`.
    public static func duration(_ s: String, field: String) throws(AllotError) -> Duration {
        let units: [(String, Int64)] = [("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000),
                                        ("h", 3_600_000_000_000), ("d", 86_400_000_000_000)]
        for (suffix, ns) in units where s.hasSuffix(suffix) {
            if let v = Int64(s.dropLast(suffix.count)), v > 0, v <= Int64.max / ns { return .nanoseconds(v * ns) }
        }
        throw AllotError(.invalidDuration, "\(field): '\(s)' is not a positive duration such as 250ms, 10s, 5m, 1h or 1d")
    }

    /// `HOST:PORT` (port 0 lets the system choose).
    public static func address(_ s: String, field: String) throws(AllotError) -> (String, Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
            throw AllotError(.invalidSettings, "\(field): '\(s)' is not HOST:PORT")
        }
        return (String(s[..<colon]), port)
    }

    /// `HH:MM` as minutes after midnight.
    static func resetMinute(_ s: String, field: String) throws(AllotError) -> Int {
        let p = s.split(separator: ":")
        guard p.count == 2, let h = Int(p[0]), let m = Int(p[1]), (0..<24).contains(h), (0..<60).contains(m) else {
            throw AllotError(.nonexistentWindow, "\(field): '\(s)' is not a time of day HH:MM")
        }
        return h * 60 + m
    }

    /// A relative path in a configuration file is relative to the file, not to the working directory.
    public static func resolve(_ p: String, relativeTo file: String) -> String {
        p.hasPrefix("/") ? p : URL(fileURLWithPath: file).deletingLastPathComponent().appendingPathComponent(p).path
    }

    /// A decoding error as `path.to.field: what is wrong`.
    public static func describe(_ error: any Error) -> String {
        if let d = error as? DecodingError {
            switch d {
            case .typeMismatch(_, let c), .valueNotFound(_, let c), .keyNotFound(_, let c), .dataCorrupted(let c):
                let path = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                return "\(path): \(c.debugDescription)"
            @unknown default: return "\(d)"
            }
        }
        return "\(error)"
    }
}
