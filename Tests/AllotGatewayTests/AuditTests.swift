import AllotDemo
import AllotCoordinator
import AllotGateway
import Foundation
import Testing

@Suite("Audit trail")
struct AuditTests {
    func tempDir() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("allot-audit-\(UUID().uuidString)")
    }

    func record(_ i: Int, consumer: String = "alice", decision: String = "admit") -> AuditRecord {
        AuditRecord(time: "2026-11-29T04:00:00.\(String(format: "%03d", i % 1000))Z", node: "gw-1", consumer: consumer,
                    keyID: "3f2a9c1b", tier: consumer == "alice" ? "pro" : "free", route: "/v1/chat/completions",
                    model: "gpt-4o", reserved: 4096, inputTokens: Int64(100 + i), outputTokens: 50, costMicroDollars: 700,
                    upstreamStatus: 200, latencyMs: 120, decision: decision, budget: decision == "deny" ? "pro.tpm/consumer=alice" : nil,
                    runaway: false)
    }

    @Test("the chain verifies across rotated files and across a restart")
    func verifies() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var log = try AuditLog(directory: dir, maxBytes: 2_000)
        for i in 0..<20 { try log.append(record(i)) }
        try log.close()
        log = try AuditLog(directory: dir, maxBytes: 2_000) // a restart continues the chain
        for i in 20..<30 { try log.append(record(i, consumer: "bob")) }
        try log.close()
        let files = AuditLog.files(in: dir)
        #expect(files.count > 3, "rotation by size")
        let report = AuditVerifier.verify(files)
        #expect(report.firstBreak == nil, "\(report.firstBreak!)")
        #expect(report.records == 30)
    }

    @Test("a changed, a removed or a reordered record is found, at its line")
    func tampering() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try AuditLog(directory: dir)
        for i in 0..<10 { try log.append(record(i)) }
        try log.close()
        let file = try #require(AuditLog.files(in: dir).first)
        let original = try String(contentsOf: file, encoding: .utf8)
        var lines = original.split(separator: "\n").map(String.init)

        // Edit the tokens of record 5: the next record's link breaks.
        var edited = lines
        edited[4] = edited[4].replacingOccurrences(of: "\"input_tokens\":104", with: "\"input_tokens\":1")
        try (edited.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        #expect(AuditVerifier.verify([file]).firstBreak?.line == 6)

        // Remove record 3.
        lines.remove(at: 2)
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        #expect(AuditVerifier.verify([file]).firstBreak?.line == 3)

        // Garbage.
        try (original + "not json\n").write(to: file, atomically: true, encoding: .utf8)
        let r = AuditVerifier.verify([file])
        #expect(r.firstBreak?.line == 11 && r.firstBreak?.reason == "not an audit record")
    }

    @Test("keyed chain: a rewrite that recomputes the links without the key is found; the key file must be 0600")
    func keyed() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let keyPath = dir.appendingPathComponent("audit.key").path
        try AuditLog.makeKey(path: keyPath)
        #expect((try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? Int) == 0o600)
        let key = try AuditLog.loadKey(path: keyPath)
        let trail = dir.appendingPathComponent("trail")
        let log = try AuditLog(directory: trail, key: key)
        for i in 0..<10 { try log.append(record(i)) }
        try log.close()
        let file = try #require(AuditLog.files(in: trail).first)
        #expect(AuditVerifier.verify([file], key: key).firstBreak == nil)
        #expect(AuditVerifier.verify([file]).firstBreak != nil, "an HMAC chain is not a SHA-256 chain")
        // Someone with write access rewrites record 5 and recomputes every link after it, as
        // they could with an unkeyed chain: without the key the links do not verify.
        var lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[4] = lines[4].replacingOccurrences(of: "\"input_tokens\":104", with: "\"input_tokens\":1")
        for i in 5..<lines.count {
            var r = try JSONDecoder().decode(AuditRecord.self, from: Data(lines[i].utf8))
            r.prev = AuditLog.hash(Data(lines[i - 1].utf8))
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            lines[i] = String(decoding: try enc.encode(r), as: UTF8.self)
        }
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        #expect(AuditVerifier.verify([file], key: key).firstBreak?.line == 6)
        // A key others can read is refused.
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: keyPath)
        #expect(throws: (any Error).self) { try AuditLog.loadKey(path: keyPath) }
    }

    @Test("a torn last line is cut at start-up, the cut recorded in the chain, and the trail goes on")
    func tornLine() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var log = try AuditLog(directory: dir)
        for i in 0..<5 { try log.append(record(i)) }
        try log.close()
        let file = try #require(AuditLog.files(in: dir).first)
        // A crash in the middle of the sixth record.
        let handle = try FileHandle(forWritingTo: file)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"seq":6,"prev":"ab"#.utf8))
        try handle.close()
        log = try AuditLog(directory: dir, node: "gw-1")
        try log.append(record(6))
        try log.close()
        let report = AuditVerifier.verify([file])
        #expect(report.firstBreak == nil, "\(report.firstBreak!)")
        #expect(report.records == 7)
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
        let cut = try JSONDecoder().decode(AuditRecord.self, from: Data(lines[5].utf8))
        #expect(cut.decision == "audit_cut" && cut.budget?.contains("19 bytes") == true, "\(cut)")
        #expect(try AuditVerifier.summary([file])["consumer=-"] == nil, "the cut is not a request")
    }

    @Test("the summary sums per consumer, tier and model")
    func summary() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try AuditLog(directory: dir)
        for i in 0..<4 { try log.append(record(i)) }
        try log.append(record(9, consumer: "bob", decision: "deny"))
        try log.close()
        let s = try AuditVerifier.summary(AuditLog.files(in: dir))
        #expect(s["consumer=alice"]?.admitted == 4)
        #expect(s["consumer=alice"]?.inputTokens == Int64(406)) // 100 + 101 + 102 + 103
        #expect(s["consumer=bob"]?.denied == 1)
        #expect(s["tier=pro"]?.outputTokens == 200)
        #expect(s["model=gpt-4o"]?.costMicroDollars == 3_500)
    }
}

@Suite("allot audit command line")
struct AuditCommandTests {
    func run(_ args: [String]) throws -> (status: Int32, output: String) { try runAllot(args) }

    @Test("verify reports ok or the first broken record with exit 1; summary prints the totals")
    func commands() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-audit-cli-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try AuditLog(directory: dir)
        for i in 0..<5 {
            try log.append(AuditRecord(time: "2026-11-29T04:00:0\(i).000Z", node: "gw-1", consumer: "alice", keyID: "ab12", tier: "pro",
                                       route: "/v1/chat/completions", model: "m", reserved: 10, inputTokens: 3, outputTokens: 4,
                                       costMicroDollars: 5, upstreamStatus: 200, latencyMs: 1, decision: "admit", budget: nil, runaway: false))
        }
        try log.close()
        let (ok, out) = try run(["audit", "verify", dir.path])
        #expect(ok == 0 && out.contains("ok: 5 records"))
        let (_, sum) = try run(["audit", "summary", dir.path])
        #expect(sum.contains("consumer=alice") && sum.contains("15"))
        let file = try #require(AuditLog.files(in: dir).first)
        let text = try String(contentsOf: file, encoding: .utf8).replacingOccurrences(of: "\"output_tokens\":4", with: "\"output_tokens\":0")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let (bad, report) = try run(["audit", "verify", dir.path])
        #expect(bad == 1 && report.contains("BROKEN after 0 good records") == false && report.contains(":2: chain broken"))
    }
}

@Suite("Audit head in the ledger", .serialized)
struct AuditHeadTests {
    @Test("a fleet reports its audit heads to the ledger; a rewrite, the last 5 records cut, the newest file deleted: each found by allot audit verify")
    func ledgerHead() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("allot-audit-head-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let keyPath = dir.appendingPathComponent("audit.key").path
        try AuditLog.makeKey(path: keyPath)
        let key = try AuditLog.loadKey(path: keyPath)
        let ledgerPath = dir.appendingPathComponent("ledger.db").path
        let (config, consumers) = try testConfig { c in
            c.auditKeyFile = keyPath
            c.auditMaxBytes = 4_096
            c.auditReportInterval = .milliseconds(200)
        }
        let fleet = try await LocalFleet.start(config: config, consumers: consumers, nodes: 1, ledgerPath: ledgerPath)
        for _ in 0..<24 { _ = try await call(port: fleet.proxyPorts[0], key: "sk-pro-1", body: chatBody(maxTokens: 10)) }
        await fleet.stop() // the last head goes out before the leases
        let trail = fleet.directory.appendingPathComponent("audit-gw-1")
        let files = AuditLog.files(in: trail)
        #expect(files.count >= 3, "rotated into several files")
        let store = try SQLiteLedger.open(path: ledgerPath)
        let head = try #require(try await store.auditHead(node: "gw-1"))
        await store.close()
        #expect(head.sequence == 24 && head.file == files.last?.lastPathComponent, "\(head)")
        #expect(AuditVerifier.verify(files, key: key, head: head).firstBreak == nil)
        let (ok, out) = try runAllot(["audit", "verify", "--key", keyPath, "--ledger", "sqlite:\(ledgerPath)", "--node", "gw-1", trail.path])
        #expect(ok == 0 && out.contains("ok: 24 records"), "\(out)")

        let newest = try #require(files.last)
        let original = try Data(contentsOf: newest)
        let lines = original.split(separator: UInt8(ascii: "\n"))
        // The last 5 records cut off: the chain that is left is whole, the head is not in it.
        let kept = lines.count > 5 ? Array(lines.dropLast(5)) : []
        try Data(kept.joined(separator: [UInt8(ascii: "\n")]) + (kept.isEmpty ? [] : [UInt8(ascii: "\n")])).write(to: newest)
        #expect(AuditVerifier.verify(files, key: key).firstBreak == nil || lines.count <= 5, "without the ledger a cut tail looks whole")
        let cut = AuditVerifier.verify(AuditLog.files(in: trail), key: key, head: head)
        #expect(cut.firstBreak?.reason.contains("cut off the end") == true || cut.firstBreak?.reason.contains("missing") == true, "\(cut)")
        let (status, said) = try runAllot(["audit", "verify", "--key", keyPath, "--ledger", "sqlite:\(ledgerPath)", "--node", "gw-1", trail.path])
        #expect(status == 1 && said.contains("BROKEN"), "\(said)")
        // The newest file deleted.
        try FileManager.default.removeItem(at: newest)
        let deleted = AuditVerifier.verify(AuditLog.files(in: trail), key: key, head: head)
        #expect(deleted.firstBreak?.reason.contains("missing") == true, "\(deleted)")
        // Put it back, then rewrite the head record itself (its own link recomputed without the key).
        try original.write(to: newest)
        var last = lines.map { String(decoding: $0, as: UTF8.self) }
        last[last.count - 1] = last[last.count - 1].replacingOccurrences(of: "\"output_tokens\":", with: "\"output_tokens\":1")
        try Data((last.joined(separator: "\n") + "\n").utf8).write(to: newest)
        let rewritten = AuditVerifier.verify(AuditLog.files(in: trail), key: key, head: head)
        #expect(rewritten.firstBreak?.reason.contains("rewritten") == true, "\(rewritten)")
    }
}
