/// Counts the entries of a frame's repeated fields on its protobuf bytes, before decoding:
/// a 1 MiB frame of ~500,000 empty items is refused by a scan, not decoded in full first.
///
/// Only the repeated fields of each `Frame` body are counted (`items`, `budgets`, `updates`,
/// `members`, `capabilities`). Bytes this scan cannot walk (not protobuf, or groups, which
/// no Allot message uses) are refused as malformed: nothing is decoded unless counted.
enum RepeatedFieldScan {
    enum Result: Equatable {
        case unreadable
        case none
        case largest(String, Int)
    }

    static func scan(_ bytes: [UInt8]) -> Result {
        guard let counts = counts(in: bytes) else { return .unreadable }
        guard let top = counts.max(by: { $0.value < $1.value }) else { return .none }
        return .largest(repeated[top.key]!.0, top.value)
    }

    /// Frame body field number → (its name, the repeated field's number inside it).
    static let repeated: [UInt64: (String, UInt64)] = [
        1: ("hello.capabilities", 3), 2: ("hello_ack.capabilities", 3),
        4: ("acquire.items", 1), 5: ("grants.items", 1), 6: ("release.items", 1), 7: ("push.items", 1),
        10: ("status_response.budgets", 1), 11: ("gossip.updates", 6), 12: ("members.members", 1),
    ]

    /// Entries of each repeated field in `bytes` (a serialized `Frame`), by body field, summed
    /// over repeated occurrences of the body (protobuf merges them); nil when not walkable.
    static func counts(in bytes: [UInt8]) -> [UInt64: Int]? {
        var counts: [UInt64: Int] = [:]
        var i = 0
        while i < bytes.count {
            guard let (field, wire) = tag(bytes, &i) else { return nil }
            if wire == 2 {
                guard let length = varint(bytes, &i), length <= UInt64(bytes.count - i) else { return nil }
                let end = i + Int(length)
                if let (_, inner) = repeated[field] {
                    guard let n = count(inner, bytes, from: i, to: end) else { return nil }
                    counts[field, default: 0] += n
                }
                i = end
            } else if !skip(wire, bytes, &i, end: bytes.count) {
                return nil
            }
        }
        return counts
    }

    /// Occurrences of `field` among the fields in `bytes[start..<end]`.
    private static func count(_ field: UInt64, _ bytes: [UInt8], from start: Int, to end: Int) -> Int? {
        var i = start, n = 0
        while i < end {
            guard let (f, wire) = tag(bytes, &i, end: end) else { return nil }
            if f == field { n += 1 }
            if wire == 2 {
                guard let length = varint(bytes, &i, end: end), length <= UInt64(end - i) else { return nil }
                i += Int(length)
            } else if !skip(wire, bytes, &i, end: end) {
                return nil
            }
        }
        return n
    }

    private static func tag(_ bytes: [UInt8], _ i: inout Int, end: Int? = nil) -> (UInt64, UInt64)? {
        guard let t = varint(bytes, &i, end: end ?? bytes.count) else { return nil }
        return (t >> 3, t & 7)
    }

    /// Skips a field of wire type 0, 1 or 5; false for anything else (groups are not used).
    private static func skip(_ wire: UInt64, _ bytes: [UInt8], _ i: inout Int, end: Int) -> Bool {
        switch wire {
        case 0: return varint(bytes, &i, end: end) != nil
        case 1 where end - i >= 8: i += 8; return true
        case 5 where end - i >= 4: i += 4; return true
        default: return false
        }
    }

    private static func varint(_ bytes: [UInt8], _ i: inout Int, end: Int? = nil) -> UInt64? {
        let end = end ?? bytes.count
        var value: UInt64 = 0, shift: UInt64 = 0
        while i < end, shift < 64 {
            let b = bytes[i]
            i += 1
            value |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}
