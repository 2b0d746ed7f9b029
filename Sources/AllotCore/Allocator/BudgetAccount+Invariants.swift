extension BudgetAccount {
    /// Nil when the books balance; otherwise what is wrong. Used by tests at every step.
    func checkInvariants() -> String? {
        if pool < 0 { return "\(spec.id): pool \(pool) < 0" }
        return book.violation(in: self)
    }
}
