/// Lowercase hex of bytes (SHA-256 digests for keys and the audit chain). A table lookup:
/// `String(format: "%02x")` per byte cost 16 % of the gateway's CPU (perf, docs/performance.md).
enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
