/// Which budgets have soft limits, and at which percents of their limit: an explicit budget's
/// own list (an empty one: none, whatever its template says), else its `tier.template`'s.
public struct SoftLimitTable: Sendable, Hashable {
    public var explicit: [BudgetID: [Int]] = [:]
    public var templates: [String: [Int]] = [:]
    public init() {}

    public var isEmpty: Bool { templates.isEmpty && !explicit.values.contains { !$0.isEmpty } }

    /// The percents for `id`, ascending (empty: none).
    public func percents(for id: BudgetID) -> [Int] {
        if let own = explicit[id] { return own }
        guard !templates.isEmpty, let slash = id.rawValue.firstIndex(of: "/") else { return [] }
        return templates[String(id.rawValue[..<slash])] ?? []
    }
}

/// Soft limits as a pure state machine: fed a budget's books after each event that may have
/// spent from it (time passed in), it reports each configured percent of the limit the
/// budget's spending crosses, once per window.
///
/// - A quota counts what its books show spent in its calendar window (reported consumed,
///   plus leases that ran out unreported), against its allowance.
/// - A rate budget counts what nodes reported consumed since the start of the current
///   period (periods aligned to multiples of its length since the epoch), against its
///   limit per period. Reports lag by up to a refresh interval; a crossing is reported when
///   the report arrives, in the window it arrives in.
/// - Concurrency budgets have no window (refused by the configuration).
public struct SoftLimits: Sendable {
    public struct Crossing: Sendable, Hashable {
        public var budget: BudgetID
        public var percent: Int
        /// Spent in the window when the crossing was seen, and the limit it is a percent of.
        public var used: Int64
        public var limit: Int64
        public var windowStart: Instant
    }

    struct Track: Sendable {
        var windowStart: Instant
        var windowEnd: Instant
        /// A rate budget's cumulative consumption when the window began (what was reported
        /// before its first report), and as last seen.
        var base: Int64
        var last: Int64 = 0
        var rate = false
        /// The highest percent reported in this window (0: none).
        var level: Int
    }

    public private(set) var table: SoftLimitTable
    var tracks: [BudgetID: Track] = [:]
    /// Crossings reported, by budget and percent (the metric's counter).
    public private(set) var counts: [BudgetID: [Int: Int64]] = [:]

    /// Whether any budget has soft limits (computed once: asked at every lease event).
    public private(set) var watching: Bool

    public init(_ table: SoftLimitTable) {
        self.table = table
        watching = !table.isEmpty
    }

    /// A new configuration's table: the tracks of budgets still watched stay (a percent
    /// already reported in this window is not reported again).
    public mutating func replace(_ table: SoftLimitTable) {
        self.table = table
        watching = !table.isEmpty
        tracks = tracks.filter { !table.percents(for: $0.key).isEmpty }
    }

    /// The highest percent crossed in `budget`'s window that holds `now` (0: none).
    public func level(_ budget: BudgetID, now: Instant) -> Int {
        tracks[budget].map { $0.windowEnd > now ? $0.level : 0 } ?? 0
    }

    /// Every budget above one of its soft limits at `now`, with the highest percent crossed.
    public func levels(now: Instant) -> [(budget: BudgetID, percent: Int)] {
        tracks.compactMap { $0.value.level > 0 && $0.value.windowEnd > now ? ($0.key, $0.value.level) : nil }.sorted { $0.budget < $1.budget }
    }

    /// Looks at a budget's books (`status`; a quota's with the window they are for,
    /// `quotaWindow`) at `now`; returns the percents crossed since the last look, lowest
    /// first, each at most once per window.
    public mutating func observe(_ status: Allocator.Status, quotaWindow: Instant?, now: Instant) -> [Crossing] {
        let percents = table.percents(for: status.budget)
        guard !percents.isEmpty else { return [] }
        let id = status.budget, kind = status.kind
        let limit: Int64, start: Instant, end: Instant, cumulative: Int64
        switch kind {
        case .quota(let allowance, let window):
            limit = allowance
            start = quotaWindow ?? window.window(containing: now).start
            end = window.window(containing: start).end
            cumulative = Checked.sum(max(0, status.consumed), max(0, status.expiredSpent))
        case .rate(let l, let period, _):
            limit = l
            let p = max(1, period.nanoseconds)
            let r = now.nanoseconds % p
            let (s, overflow) = now.nanoseconds.subtractingReportingOverflow(r < 0 ? r + p : r)
            start = Instant(nanoseconds: overflow ? .min : s)
            end = Instant(nanoseconds: Checked.sum(start.nanoseconds, p))
            cumulative = max(0, status.consumed)
        case .concurrency:
            return []
        }
        let previous = tracks[id]
        var track: Track
        if let previous, previous.windowStart == start {
            track = previous
        } else {
            // A new window. A quota's books restart with it. A rate budget counts what is
            // reported from now on: everything reported before belongs to earlier periods
            // (a budget first seen now was made now: its books start at 0).
            track = Track(windowStart: start, windowEnd: end, base: kind.isRate ? (previous?.last ?? 0) : 0, rate: kind.isRate, level: 0)
        }
        // A rate budget's cumulative count can drop (its books retired and made again).
        if cumulative < track.base { track.base = cumulative }
        track.last = cumulative
        let used = cumulative - track.base
        var out: [Crossing] = []
        for p in percents where p > track.level && Self.reaches(used, percent: p, of: limit) {
            out.append(Crossing(budget: id, percent: p, used: used, limit: limit, windowStart: start))
            counts[id, default: [:]][p, default: 0] += 1
            track.level = p
        }
        tracks[id] = track
        return out
    }

    /// Forgets quotas whose window has ended (the counts stay). A quota retired and made again
    /// within its window keeps its level, so a crossing is not reported twice. Rate budgets
    /// stay until `forget`: their last count is the next period's start.
    public mutating func prune(now: Instant) {
        tracks = tracks.filter { _, t in t.rate || t.windowEnd > now }
    }

    /// `budget`'s books are gone (retired, or owned elsewhere now): a rate budget made again
    /// counts from 0.
    public mutating func forget(_ budget: BudgetID) {
        if tracks[budget]?.rate == true { tracks[budget] = nil }
    }

    /// `used ≥ percent% of limit`, exactly: used·100 ≥ percent·limit in 128 bits.
    static func reaches(_ used: Int64, percent: Int, of limit: Int64) -> Bool {
        let lhs = used.multipliedFullWidth(by: 100)
        let rhs = limit.multipliedFullWidth(by: Int64(percent))
        return (lhs.high, lhs.low) >= (rhs.high, rhs.low)
    }
}
