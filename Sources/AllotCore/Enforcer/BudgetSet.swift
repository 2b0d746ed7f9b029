/// A budget registered with an `Enforcer`, by position: the hot path indexes an array
/// instead of hashing a name.
public struct BudgetHandle: Hashable, Sendable, CustomStringConvertible {
    public let index: Int32
    @inlinable init(index: Int32) { self.index = index }
    public var description: String { "#\(index)" }
}

/// Up to `BudgetSet.capacity` budgets that one request is charged to, all or nothing.
/// Stored inline: building, copying and passing it allocates nothing.
public struct BudgetSet: Sendable {
    public static let capacity = 8
    @usableFromInline var handles: InlineArray<8, Int32>
    public private(set) var count: Int

    public init(_ budgets: [BudgetHandle]) throws(AllotError) {
        guard budgets.count <= Self.capacity else {
            throw AllotError(.tooManyBudgets, "a request can be charged to at most \(Self.capacity) budgets (got \(budgets.count))")
        }
        handles = InlineArray(repeating: -1)
        count = budgets.count
        for (i, b) in budgets.enumerated() { handles[i] = b.index }
    }

    public init(_ budget: BudgetHandle) {
        handles = InlineArray(repeating: -1)
        handles[0] = budget.index
        count = 1
    }

    @inlinable
    public subscript(i: Int) -> BudgetHandle { BudgetHandle(index: handles[i]) }
}

/// What `reserve` took, so that `settle` can give back exactly the difference.
public struct Reservation: Sendable {
    public let budgets: BudgetSet
    @usableFromInline var amounts: InlineArray<8, Int64>
    /// The lease each amount came from; 0 when it came from a fail mode.
    @usableFromInline var leases: InlineArray<8, UInt64>
    @usableFromInline var fromFailMode: InlineArray<8, Bool>

    @inlinable
    init(budgets: BudgetSet) {
        self.budgets = budgets
        amounts = InlineArray(repeating: 0)
        leases = InlineArray(repeating: 0)
        fromFailMode = InlineArray(repeating: false)
    }

    /// The amount reserved on the i-th budget of the set.
    public func amount(_ i: Int) -> Int64 { amounts[i] }
}

/// The answer to `reserve`/`admit`.
public enum Decision: Sendable {
    case admitted(Reservation)
    /// Denied; nothing was taken. The budget the request waits for (the one being asked for):
    /// docs/design.md, "Requests charged to several budgets".
    case denied(by: BudgetHandle)

    @inlinable
    public var isAdmitted: Bool {
        if case .admitted = self { return true }
        return false
    }
}
