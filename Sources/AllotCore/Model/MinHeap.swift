/// A binary min-heap of (key, value) pairs: the allocator's deadlines, the simulator's
/// request ends. Equal keys come out in no particular order.
public struct MinHeap<Key: Comparable & Sendable, Value: Sendable>: Sendable {
    private var items: [(key: Key, value: Value)] = []

    public init() {}

    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }
    /// The smallest key, without taking it.
    public var first: (key: Key, value: Value)? { items.first }

    public mutating func push(_ key: Key, _ value: Value) {
        items.append((key, value))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[i].key < items[p].key else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    public mutating func pop() -> (key: Key, value: Value)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l].key < items[m].key { m = l }
            if r < items.count && items[r].key < items[m].key { m = r }
            guard m != i else { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}
