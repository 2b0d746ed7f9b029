/// What the durable ledger keeps for one quota budget and calendar window: four cumulative
/// counters. Every unit ever granted in the window is in `granted`; it either came back
/// (`released`) or counts against the allowance (consumed, expired or still out on a node).
/// The cap, as the ledger enforces it: `granted − released ≤ allowance`.
public struct LedgerCounters: Hashable, Sendable {
    public var granted: Int64 = 0
    public var released: Int64 = 0
    public var consumed: Int64 = 0
    public var expired: Int64 = 0

    public init(granted: Int64 = 0, released: Int64 = 0, consumed: Int64 = 0, expired: Int64 = 0) {
        self.granted = granted
        self.released = released
        self.consumed = consumed
        self.expired = expired
    }

    /// Units that count against the allowance: consumed, expired, or out on nodes. A row is
    /// read from a database, so every sum saturates (a hostile or corrupt row gives a bound
    /// the allocator clamps, never a trap).
    public var committed: Int64 { Checked.difference(granted, released) }
    /// Units granted and neither returned nor reported: what nodes may still hold.
    public var unreported: Int64 {
        max(0, Checked.difference(Checked.difference(committed, consumed), expired))
    }
    /// The row as read from a database, each counter clamped to 0...2^62 (a row edited by
    /// hand is untrusted).
    public var clamped: LedgerCounters {
        LedgerCounters(granted: Checked.units(granted), released: Checked.units(released),
                       consumed: Checked.units(consumed), expired: Checked.units(expired))
    }
    public var isZero: Bool { granted == 0 && released == 0 && consumed == 0 && expired == 0 }

    public static func += (a: inout LedgerCounters, b: LedgerCounters) {
        a.granted = Checked.add(a.granted, b.granted)
        a.released = Checked.add(a.released, b.released)
        a.consumed = Checked.add(a.consumed, b.consumed)
        a.expired = Checked.add(a.expired, b.expired)
    }
}

/// One change for the ledger: counters to add to one budget's window. A change with
/// `granted > 0` is a write-ahead record: the grants it covers are sent only once it is
/// durable, and only if the ledger accepted it under the cap.
public struct LedgerChange: Hashable, Sendable {
    public var budget: BudgetID
    public var windowStart: Instant
    public var windowEnd: Instant
    public var allowance: Int64
    public var delta: LedgerCounters

    public init(budget: BudgetID, windowStart: Instant, windowEnd: Instant, allowance: Int64, delta: LedgerCounters) {
        self.budget = budget
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.allowance = allowance
        self.delta = delta
    }
}

extension BudgetAccount {
    /// Adds to the journal of a quota budget (when the allocator journals).
    mutating func journal(_ window: Instant, _ f: (inout LedgerCounters) -> Void) {
        // Upstream-backed budgets are recorded by the upstream's ledger, not this one.
        guard journaling, upstream == nil, book.quotaBook != nil else { return }
        f(&journalEntries[window, default: LedgerCounters()])
    }

    /// The changes since the last call, oldest window first.
    mutating func takeJournal() -> [LedgerChange] {
        guard !journalEntries.isEmpty, let q = book.quotaBook else { return [] }
        defer { journalEntries = [:] }
        return journalEntries.keys.sorted().compactMap { start in
            let d = journalEntries[start]!
            guard !d.isZero else { return nil }
            let end = start == q.windowStart ? q.windowEnd : q.window.window(containing: start).1
            return LedgerChange(budget: spec.id, windowStart: start, windowEnd: end, allowance: q.allowance, delta: d)
        }
    }

    /// A grant whose ledger record was refused (cap reached elsewhere) or never became
    /// durable: take it back, as if it had never been made. The node never saw it.
    mutating func revoke(node: NodeID, requestID: UInt64, leaseID: LeaseID, amount: Int64) -> Bool {
        guard var entry = nodes[node], var lease = entry.lease, lease.id == leaseID, lease.unreturned >= amount else {
            return false // the lease ended meanwhile: its units were counted as spent
        }
        lease.granted -= amount
        outstanding -= amount
        pool += amount
        grantsTotal -= 1
        entry.lease = lease
        if entry.lastRequestID == requestID {
            // A retry of this request must be sized (and recorded) afresh, not re-sent.
            entry.lastGrant = nil
            entry.lastRequestID = requestID &- 1
        }
        nodes[node] = entry
        return true
    }
}
