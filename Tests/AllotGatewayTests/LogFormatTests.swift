import AllotDemo
@testable import AllotGateway
import AllotTransport
import Foundation
import Logging
import Synchronization
import Testing

/// `--log-format json` and `--access-log`: one JSON object per line; every request's line
/// carries its request id (the caller's `x-request-id`, or a new one, also answered) and the
/// W3C `traceparent` it came with.
@Suite("JSON log lines and the access log", .serialized)
struct LogFormatTests {
    @Test("a JSON line has time, level, label, message, metadata (nested too) and source; hostile text stays one line of valid JSON")
    func jsonLines() throws {
        let lines = Mutex<[Data]>([])
        var logger = Logger(label: "allot.test") { JSONLogHandler(label: $0, write: { d in lines.withLock { $0.append(d) } }) }
        logger[metadataKey: "allot.node"] = "gw-1"
        logger.notice("hello \"quoted\"\nnext line", metadata: ["allot.list": ["a", "b"], "allot.map": ["k": "v"], "level": "spoofed"])
        let all = lines.withLock { $0 }
        #expect(all.count == 1 && all[0].last == 0x0a && all[0].dropLast().firstIndex(of: 0x0a) == nil)
        let o = try #require(try JSONSerialization.jsonObject(with: all[0]) as? [String: Any])
        #expect(o["level"] as? String == "notice" && o["label"] as? String == "allot.test" && o["allot.node"] as? String == "gw-1")
        #expect(o["message"] as? String == "hello \"quoted\"\nnext line")
        #expect(o["allot.list"] as? [String] == ["a", "b"] && (o["allot.map"] as? [String: String]) == ["k": "v"])
        let time = try #require(o["time"] as? String)
        #expect(time.count == 27 && time.hasSuffix("Z") && ISO8601DateFormatter().date(from: time.replacingOccurrences(of: #"\.\d{6}"#, with: "", options: .regularExpression)) != nil, "\(time)")
    }

    @Test("real time: with the access log on, each request's line (JSON) has its request id and traceparent; the answer carries x-allot-request-id")
    func accessLog() async throws {
        let (base, consumers) = try testConfig()
        let fleet = try await LocalFleet.start(config: base, consumers: consumers, nodes: 1)
        let lines = Mutex<[Data]>([])
        var logger = Logger(label: "allot.gateway") { JSONLogHandler(label: $0, write: { d in lines.withLock { $0.append(d) } }) }
        logger.logLevel = .info
        var g = base
        g.name = "gw-log"
        g.accessLog = true
        g.upstream = URL(string: "http://127.0.0.1:\(try #require(fleet.mockPort))")!
        g.auditDirectory = nil
        _ = try CertificateAuthority.open(fleet.directory.appendingPathComponent("certs")).issue(role: .node, name: "gw-log")
        let (_, port, task) = try await startGateway(g, consumers: consumers, beside: fleet, logger: logger)
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let mine = try await call(port: port, key: "sk-pro-1", body: chatBody(maxTokens: 20), headers: [("x-request-id", "req-42"), ("traceparent", traceparent)])
        let fresh = try await call(port: port, key: "sk-nobody", body: chatBody(maxTokens: 20))
        task.cancel()
        _ = await task.result
        await fleet.stop()
        #expect(mine.status == 200 && mine.headers["x-allot-request-id"] == "req-42")
        let freshID = try #require(fresh.headers["x-allot-request-id"])
        #expect(fresh.status == 401 && freshID.count == 36)
        let objects = lines.withLock { $0 }.compactMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        let requests = objects.filter { $0["message"] as? String == "request" }
        #expect(requests.count == 2, "\(objects)")
        #expect(requests.contains { $0["allot.request_id"] as? String == "req-42" && $0["trace.traceparent"] as? String == traceparent && $0["http.status"] as? String == "200" })
        #expect(requests.contains { $0["allot.request_id"] as? String == freshID && $0["trace.traceparent"] == nil && $0["http.status"] as? String == "401" })
        // The same lines through jq, line by line, as an operator's pipeline reads them.
        if let jq = ["/usr/bin/jq", "/usr/local/bin/jq"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("allot-log-\(UUID().uuidString.prefix(8)).jsonl")
            try lines.withLock { $0 }.reduce(Data(), +).write(to: file)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: jq)
            p.arguments = ["-r", #"select(.message == "request") | "\(."allot.request_id") \(."http.status")""#, file.path]
            let out = Pipe()
            (p.standardOutput, p.standardError) = (out, out)
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            try? FileManager.default.removeItem(at: file)
            // jq exits non-zero on any line that is not JSON.
            #expect(p.terminationStatus == 0, "\(text)")
            #expect(text.split(separator: "\n").sorted() == ["\(freshID) 401", "req-42 200"].sorted(), "\(text)")
        } else {
            #expect(ProcessInfo.processInfo.environment["ALLOT_REQUIRE_JQ"] == nil, "jq is missing (apt-get install jq)")
        }
        // traceparent: only the W3C form.
        #expect(ProxyResponder.isTraceparent(traceparent))
        for bad in ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""] {
            #expect(!ProxyResponder.isTraceparent(bad), "\(bad)")
        }
    }
}
