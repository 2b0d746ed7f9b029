import Foundation
import Testing
@testable import AllotCore

@Suite("Model and validation")
struct ModelTests {
    func utc(_ y: Int, _ mo: Int, _ d: Int, _ h: Int = 0, _ mi: Int = 0) -> Instant {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        let date = c.date(from: DateComponents(year: y, month: mo, day: d, hour: h, minute: mi))!
        return Instant(nanoseconds: Int64(date.timeIntervalSince1970) * 1_000_000_000)
    }

    @Test("zero or negative limits are refused, naming the budget")
    func limits() {
        for kind in [BudgetKind.rate(limit: 0, period: .seconds(1), burst: 1),
                     .quota(allowance: -5, window: try! CalendarWindow(.day)),
                     .concurrency(limit: 0)] {
            #expect { try BudgetSpec(id: "x", unit: .tokens, kind: kind) } throws: {
                ($0 as! AllotError).code == .invalidLimit && "\($0)".contains("budget x")
            }
        }
        #expect { try BudgetSpec(id: "x", unit: .tokens, kind: .rate(limit: 5, period: .zero, burst: 5)) } throws: {
            ($0 as! AllotError).code == .invalidDuration
        }
    }

    @Test("burst below 1 is refused")
    func burst() {
        #expect { try BudgetSpec(id: "x", unit: .tokens, kind: .rate(limit: 5, period: .seconds(1), burst: 0)) } throws: {
            ($0 as! AllotError).code == .invalidBurst
        }
    }

    @Test("unknown unit, dimension and time zone names are refused with the known ones listed")
    func unknownNames() throws {
        #expect { try Unit(parsing: "gallons") } throws: {
            let e = $0 as! AllotError
            return e.code == .unknownUnit && e.message.contains("micro_dollars")
        }
        #expect(try Unit(parsing: "input_tokens") == .inputTokens)
        #expect { try Dimension(parsing: "region") } throws: { ($0 as! AllotError).code == .unknownDimension }
        #expect { try CalendarWindow(.day, timeZone: "Mars/Olympus") } throws: { ($0 as! AllotError).code == .unknownTimeZone }
    }

    @Test("a cost larger than the budget could ever allow is refused")
    func costTooLarge() throws {
        let b = rateBudget(limit: 100, burst: 50)
        #expect { try b.check(cost: .tokens(51)) } throws: { ($0 as! AllotError).code == .costExceedsLimit }
        try b.check(cost: .tokens(50))
        let c = concurrencyBudget(limit: 1)
        try c.check(cost: .tokens(1_000_000)) // a permit is one, whatever the tokens
    }

    @Test("a window whose reset time falls into a daylight-saving gap does not exist")
    func nonexistentWindow() throws {
        // Europe/Berlin skips 02:00–03:00 on the last Sunday of March.
        #expect { try CalendarWindow(.day, timeZone: "Europe/Berlin", resetMinute: 150) } throws: {
            let e = $0 as! AllotError
            return e.code == .nonexistentWindow && e.message.contains("02:30")
        }
        _ = try CalendarWindow(.day, timeZone: "Europe/Berlin", resetMinute: 180)
        _ = try CalendarWindow(.month, timeZone: "Europe/Berlin", resetMinute: 150) // never on the 1st
        #expect { try CalendarWindow(.hour, timeZone: "UTC", resetMinute: 30) } throws: {
            ($0 as! AllotError).code == .nonexistentWindow
        }
        #expect { try CalendarWindow(.day, resetMinute: 1440) } throws: { ($0 as! AllotError).code == .nonexistentWindow }
    }

    @Test("month windows end at the month's end, leap years included")
    func monthEnds() throws {
        let w = try CalendarWindow(.month)
        let jan = w.window(containing: utc(2026, 1, 31, 23, 59))
        #expect(jan.start == utc(2026, 1, 1) && jan.end == utc(2026, 2, 1))
        let feb = w.window(containing: utc(2028, 2, 29, 12))
        #expect(feb.start == utc(2028, 2, 1) && feb.end == utc(2028, 3, 1))
        let dec = w.window(containing: utc(2026, 12, 31, 23, 59))
        #expect(dec.end == utc(2027, 1, 1))
        #expect(w.window(containing: utc(2026, 3, 1)).start == utc(2026, 3, 1)) // start is inside
        #expect(w.window(containing: utc(2026, 3, 1) - .nanoseconds(1)).start == utc(2026, 2, 1))
    }

    @Test("day windows in a DST zone are 23 and 25 hours long on change days")
    func dstDays() throws {
        let w = try CalendarWindow(.day, timeZone: "America/New_York")
        let spring = w.window(containing: utc(2026, 3, 8, 12)) // 2026-03-08 DST starts
        #expect(spring.end - spring.start == .seconds(23 * 3600))
        #expect(spring.start == utc(2026, 3, 8, 5)) // midnight EST = 05:00 UTC
        let fall = w.window(containing: utc(2026, 11, 1, 12)) // 2026-11-01 DST ends
        #expect(fall.end - fall.start == .seconds(25 * 3600))
        let normal = w.window(containing: utc(2026, 7, 1, 12))
        #expect(normal.end - normal.start == .seconds(24 * 3600))
        // A month window in Berlin starts at local midnight.
        let m = try CalendarWindow(.month, timeZone: "Europe/Berlin")
        #expect(m.window(containing: utc(2026, 7, 15)).start == utc(2026, 6, 30, 22))
        // Reset at 06:00 local.
        let six = try CalendarWindow(.day, timeZone: "Europe/Berlin", resetMinute: 360)
        let win = six.window(containing: utc(2026, 7, 15, 3)) // 05:00 local: still yesterday's window
        #expect(win.start == utc(2026, 7, 14, 4) && win.end == utc(2026, 7, 15, 4))
    }

    @Test("minute and hour windows")
    func shortWindows() throws {
        let m = try CalendarWindow(.minute)
        #expect(m.window(containing: utc(2026, 5, 5, 10, 7) + .seconds(30)).start == utc(2026, 5, 5, 10, 7))
        let h = try CalendarWindow(.hour, timeZone: "Asia/Kolkata") // UTC+05:30
        #expect(h.window(containing: utc(2026, 5, 5, 10, 45)).start == utc(2026, 5, 5, 10, 30))
    }

    @Test("tiers resolve to budgets keyed by the request; overrides apply; unknown tiers are errors")
    func tiers() throws {
        let perConsumer = try BudgetTemplate(name: "tpm", unit: .tokens, kind: .rate(limit: 60_000, period: .seconds(60), burst: 60_000), scope: [.consumer])
        let perTeam = try BudgetTemplate(name: "team_month", unit: .tokens, kind: .quota(allowance: 10_000_000, window: try CalendarWindow(.month)), scope: [.team])
        let perModel = try BudgetTemplate(name: "model_conc", unit: .requests, kind: .concurrency(limit: 8), scope: [.tenant, .model])
        let catalog = try TierCatalog([try Tier(name: "pro", templates: [perConsumer, perTeam, perModel])])
        let alice = Consumer(id: "alice", team: "ml", tenant: "acme", tier: "pro",
                             overrides: ["tpm": .rate(limit: 120_000, period: .seconds(60), burst: 120_000)])
        let budgets = try catalog.budgets(for: alice, model: "gpt-4o")
        #expect(budgets.map(\.id.rawValue) == ["pro.tpm/consumer=alice", "pro.team_month/team=ml", "pro.model_conc/tenant=acme,model=gpt-4o"])
        #expect(budgets[0].kind == .rate(limit: 120_000, period: .seconds(60), burst: 120_000))
        #expect(try catalog.budgets(for: alice).count == 2) // no model: the model budget does not apply
        #expect { try catalog.budgets(for: Consumer(id: "bob", tier: "gold")) } throws: {
            let e = $0 as! AllotError
            return e.code == .unknownTier && e.message.contains("pro")
        }
        #expect { try catalog.budgets(for: Consumer(id: "bob", tier: "pro", overrides: ["rpm": .concurrency(limit: 1)])) } throws: {
            ($0 as! AllotError).code == .unknownTemplate
        }
        #expect { try Tier(name: "t", templates: [perConsumer, perConsumer]) } throws: { ($0 as! AllotError).code == .duplicateBudget }

        // A coordinator creates the same budgets from their ids (without the override,
        // which must be configured as an explicit budget).
        let made = try #require(catalog.instantiate("pro.model_conc/tenant=acme,model=gpt-4o"))
        #expect(made.kind == .concurrency(limit: 8) && made.key == BudgetKey([.tenant: "acme", .model: "gpt-4o"]))
        #expect(catalog.instantiate("pro.tpm/consumer=bob")?.kind == .rate(limit: 60_000, period: .seconds(60), burst: 60_000))
        for bad in ["gold.tpm/consumer=bob", "pro.nope/consumer=bob", "pro.tpm/team=ml", "pro.tpm/consumer=",
                    "pro.tpm", "pro.tpm/consumer=a,consumer=b", "pro.model_conc/model=m,tenant=t"] {
            #expect(catalog.instantiate(BudgetID(bad)) == nil, "\(bad)")
        }
    }

    @Test("budget keys are canonical whatever the order of their parts")
    func keys() {
        let a = BudgetKey([.model: "m", .tenant: "t"])
        let b = BudgetKey([.tenant: "t", .model: "m"])
        #expect(a == b && a.description == "tenant=t,model=m")
        #expect(BudgetKey().description == "*")
    }
}
