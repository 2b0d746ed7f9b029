/// The dimensions a budget can be keyed by.
public enum Dimension: String, CaseIterable, Hashable, Sendable, Comparable, Codable {
    case tenant, team, consumer, route, model

    public static func < (a: Dimension, b: Dimension) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    public init(parsing name: String) throws(AllotError) {
        guard let d = Dimension(rawValue: name) else {
            let known = Dimension.allCases.map(\.rawValue).joined(separator: ", ")
            throw AllotError(.unknownDimension, "unknown key dimension '\(name)'; use one of: \(known)")
        }
        self = d
    }
}

/// Which slice of traffic a budget covers: any subset of the dimensions, each with a value.
/// `{tenant: acme, model: gpt-4o}` is one key; the empty key is the whole fleet.
public struct BudgetKey: Hashable, Sendable, CustomStringConvertible {
    /// Values by dimension, kept sorted by dimension so equal keys compare equal.
    public private(set) var parts: [(Dimension, String)]

    public init(_ values: [Dimension: String] = [:]) {
        parts = values.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    public subscript(d: Dimension) -> String? { parts.first { $0.0 == d }?.1 }

    /// Canonical text form, `tenant=acme,model=gpt-4o`; the empty key is `*`.
    public var description: String {
        parts.isEmpty ? "*" : parts.map { "\($0.0.rawValue)=\($0.1)" }.joined(separator: ",")
    }

    public static func == (a: BudgetKey, b: BudgetKey) -> Bool { a.description == b.description }
    public func hash(into h: inout Hasher) { h.combine(description) }
}

/// The identity of a budget across the cluster: a template name and a key,
/// e.g. `tokens_per_minute/consumer=alice`.
public struct BudgetID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    public var rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { rawValue = value }
    public init(template: String, key: BudgetKey) { rawValue = "\(template)/\(key)" }
    public var description: String { rawValue }
    public static func < (a: BudgetID, b: BudgetID) -> Bool { a.rawValue < b.rawValue }
}

/// The identity of a gateway node (from its certificate in later layers).
public struct NodeID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    public var rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { rawValue = value }
    public var description: String { rawValue }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.rawValue < b.rawValue }
}
