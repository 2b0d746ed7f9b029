import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal, blocking Redis (RESP2) client for the benchmark's peer strategies: one
/// request, one reply, on one TCP connection — what a gateway calling Redis on each request
/// pays. Not for production use (no pipelining, no reconnects, no TLS).
final class RedisClient {
    enum Reply: Equatable {
        case integer(Int64)
        case string(String)
        case null
        case array([Reply])
        case error(String)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    /// Commands sent (what "Redis calls per 1,000 requests" counts).
    private(set) var calls = 0

    init(host: String, port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host)
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else {
            close(fd)
            throw Failure(description: "cannot connect to Redis at \(host):\(port) (errno \(errno))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Sends one command and waits for its reply.
    func command(_ args: [String]) throws -> Reply {
        var out = "*\(args.count)\r\n"
        for a in args { out += "$\(a.utf8.count)\r\n\(a)\r\n" }
        let bytes = Array(out.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "Redis connection lost while sending (errno \(errno))") }
            sent += n
        }
        calls += 1
        return try read()
    }

    private func line() throws -> String {
        while true {
            if let i = buffer[start...].firstIndex(of: 10), i > start, buffer[i - 1] == 13 {
                let s = String(decoding: buffer[start..<(i - 1)], as: UTF8.self)
                start = i + 1
                return s
            }
            try fill()
        }
    }

    private func fill() throws {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw Failure(description: "Redis connection closed") }
        buffer += chunk[0..<n]
    }

    private func read() throws -> Reply {
        let l = try line()
        guard let kind = l.first else { throw Failure(description: "empty reply from Redis") }
        let rest = String(l.dropFirst())
        switch kind {
        case ":": return .integer(Int64(rest) ?? 0)
        case "+": return .string(rest)
        case "-": return .error(rest)
        case "$":
            let n = Int(rest) ?? -1
            if n < 0 { return .null }
            while buffer.count - start < n + 2 { try fill() }
            let s = String(decoding: buffer[start..<(start + n)], as: UTF8.self)
            start += n + 2
            return .string(s)
        case "*":
            let n = Int(rest) ?? -1
            if n < 0 { return .null }
            return .array(try (0..<n).map { _ in try read() })
        default:
            throw Failure(description: "unexpected reply from Redis: \(l)")
        }
    }
}
