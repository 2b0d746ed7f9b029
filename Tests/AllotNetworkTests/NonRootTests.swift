import Foundation
import Testing

/// Allot as a non-root user (uid 65532, as the Dockerfile and the Kubernetes examples run it):
/// a socket option that only root may set (SO_DEBUG, which `.socketOption(.tcp_nodelay)`
/// meant by mistake: TCP_NODELAY at the socket level) once made every node's connection fail.
@Suite("allot as a non-root user", .serialized,
       .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root (to drop to uid 65532) and setpriv"))
struct NonRootTests {
    @Test("real time, processes: allot demo as uid 65532 (coordinator, gateways, mock over mTLS on loopback) admits requests and keeps every cap")
    func demoAsNonRoot() async throws {
        let binary = try #require(ProcessTests.binary, "build the allot binary first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-nonroot-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o777])
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid=65532", "--regid=65532", "--clear-groups", binary.path, "demo", "--duration", "2", "--quiet",
                       "--report", dir.appendingPathComponent("report.html").path]
        p.environment = ["HOME": dir.path, "TMPDIR": dir.path, "PATH": "/usr/bin:/bin"]
        let out = Pipe()
        (p.standardOutput, p.standardError) = (out, out)
        try p.run()
        let deadline = ContinuousClock.now + .seconds(90)
        while p.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let admitted = text.split(separator: "\n").first { $0.hasPrefix("requests ") }
            .flatMap { $0.split(separator: ",").dropFirst().first }.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        #expect(p.terminationStatus == 0 && admitted > 0 && text.contains("total overshoot: 0"), "\(text.suffix(600))")
    }
}
