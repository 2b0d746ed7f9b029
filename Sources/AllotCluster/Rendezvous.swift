import AllotCore

/// Budget ownership by rendezvous (highest-random-weight) hashing: a budget belongs to the
/// live member with the highest hash of (budget, member). When a member goes, only its
/// budgets move; when one joins, it takes about 1/n of everyone's.
public enum Rendezvous {
    public static func owner(of budget: BudgetID, among members: [MemberID]) -> MemberID? {
        members.max { weight(budget, $0) < weight(budget, $1) || (weight(budget, $0) == weight(budget, $1) && $0 > $1) }
    }

    /// A stable 64-bit weight (FNV-1a, then a SplitMix finaliser): the same on every
    /// coordinator and every run, unlike Swift's seeded `Hasher`.
    public static func weight(_ budget: BudgetID, _ member: MemberID) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in budget.rawValue.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xff) &* 0x100_0000_01b3
        for b in member.name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        return h ^ (h >> 31)
    }
}
