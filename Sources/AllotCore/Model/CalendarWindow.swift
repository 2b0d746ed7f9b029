import Foundation

/// A calendar window for a `quota` budget: every minute, hour, day or month, in UTC or an
/// IANA time zone, resetting at a local time of day (days and months only).
///
/// Windows follow the local calendar, so a day window on a daylight-saving change is 23 or
/// 25 hours long and a month window is as long as its month.
public struct CalendarWindow: Hashable, Sendable, CustomStringConvertible {
    public enum Period: String, CaseIterable, Hashable, Sendable {
        case minute, hour, day, month
    }

    public let period: Period
    /// IANA identifier, e.g. `UTC`, `Europe/Berlin`.
    public let timeZoneID: String
    /// Local time of day at which day and month windows reset, in minutes after midnight.
    public let resetMinute: Int
    private let timeZone: TimeZone

    /// Validates the window: the zone must exist and the reset time must exist on every
    /// day it is used (it must not fall into a daylight-saving gap).
    public init(_ period: Period, timeZone id: String = "UTC", resetMinute: Int = 0) throws(AllotError) {
        guard let tz = TimeZone(identifier: id) else {
            throw AllotError(.unknownTimeZone,
                             "unknown time zone '\(id)'; use an IANA name such as UTC or Europe/Berlin")
        }
        guard (0..<1440).contains(resetMinute) else {
            throw AllotError(.nonexistentWindow,
                             "reset time \(resetMinute) minutes is not a time of day; use 0..<1440 (00:00..23:59)")
        }
        if resetMinute != 0 && (period == .minute || period == .hour) {
            throw AllotError(.nonexistentWindow,
                             "a \(period.rawValue) window resets on the \(period.rawValue); a reset time applies to day and month windows only")
        }
        self.period = period
        self.timeZoneID = id
        self.resetMinute = resetMinute
        self.timeZone = tz
        if period == .day || period == .month, let gap = Self.firstGap(in: tz, resetMinute: resetMinute, monthly: period == .month) {
            let hh = resetMinute / 60, mm = resetMinute % 60
            throw AllotError(.nonexistentWindow,
                             "a \(period.rawValue) window resetting at \(String(format: "%02d:%02d", hh, mm)) in \(id) does not exist on \(gap): that local time is skipped by a daylight-saving change; choose another reset time")
        }
    }

    public static func == (a: CalendarWindow, b: CalendarWindow) -> Bool {
        a.period == b.period && a.timeZoneID == b.timeZoneID && a.resetMinute == b.resetMinute
    }
    public func hash(into h: inout Hasher) {
        h.combine(period); h.combine(timeZoneID); h.combine(resetMinute)
    }

    public var description: String {
        resetMinute == 0 ? "\(period.rawValue)@\(timeZoneID)"
            : "\(period.rawValue)@\(timeZoneID)+\(resetMinute)m"
    }

    /// The window `[start, end)` that contains `instant`.
    public func window(containing instant: Instant) -> (start: Instant, end: Instant) {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = timeZone
        let secs = Self.floorDiv(instant.nanoseconds, 1_000_000_000)
        let date = Date(timeIntervalSince1970: TimeInterval(secs))
        let start: Date, end: Date
        switch period {
        case .minute, .hour:
            let component: Calendar.Component = period == .minute ? .minute : .hour
            let interval = cal.dateInterval(of: component, for: date)!
            start = interval.start
            end = interval.end
        case .day:
            var s = reset(onDayOf: date, cal)
            if s > date { s = reset(onDayOf: cal.date(byAdding: .day, value: -1, to: s)!, cal) }
            start = s
            end = reset(onDayOf: cal.date(byAdding: .day, value: 1, to: s)!, cal)
        case .month:
            var s = reset(onFirstOfMonthOf: date, cal)
            if s > date {
                s = reset(onFirstOfMonthOf: cal.date(byAdding: .month, value: -1, to: s)!, cal)
            }
            start = s
            end = reset(onFirstOfMonthOf: cal.date(byAdding: .month, value: 1, to: s)!, cal)
        }
        return (Self.instant(start), Self.instant(end))
    }

    private func reset(onDayOf date: Date, _ cal: Calendar) -> Date {
        var c = cal.dateComponents([.year, .month, .day], from: date)
        c.hour = resetMinute / 60
        c.minute = resetMinute % 60
        c.second = 0
        return cal.date(from: c)!
    }

    private func reset(onFirstOfMonthOf date: Date, _ cal: Calendar) -> Date {
        var c = cal.dateComponents([.year, .month], from: date)
        c.day = 1
        c.hour = resetMinute / 60
        c.minute = resetMinute % 60
        c.second = 0
        return cal.date(from: c)!
    }

    private static func instant(_ d: Date) -> Instant {
        Instant(nanoseconds: Int64(d.timeIntervalSince1970.rounded()) * 1_000_000_000)
    }

    @usableFromInline
    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    /// The first local date (2000–2060) on which the reset time falls into a daylight-saving
    /// gap, as `YYYY-MM-DD`, or nil when it exists every day.
    private static func firstGap(in tz: TimeZone, resetMinute: Int, monthly: Bool) -> String? {
        var t = Date(timeIntervalSince1970: 946_684_800) // 2000-01-01
        let limit = Date(timeIntervalSince1970: 2_871_763_200) // 2061-01-01
        let resetSecond = Int64(resetMinute) * 60
        var utc = Calendar(identifier: .gregorian)
        utc.timeZone = TimeZone(identifier: "UTC")!
        while let next = tz.nextDaylightSavingTimeTransition(after: t), next < limit {
            let tSec = Int64(next.timeIntervalSince1970.rounded())
            let before = Int64(tz.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(tSec - 1))))
            let after = Int64(tz.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(tSec))))
            if after > before {
                // Local wall-clock seconds [w0, w0 + gap) do not exist.
                let w0 = tSec + before, w1 = tSec + after
                let day0 = floorDiv(w0, 86_400)
                for day in [day0, day0 + 1] {
                    let candidate = day * 86_400 + resetSecond
                    guard candidate >= w0 && candidate < w1 else { continue }
                    let local = Date(timeIntervalSince1970: TimeInterval(candidate))
                    let c = utc.dateComponents([.year, .month, .day], from: local)
                    if monthly && c.day != 1 { continue }
                    return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
                }
            }
            t = Date(timeIntervalSince1970: TimeInterval(tSec + 1))
        }
        return nil
    }
}
