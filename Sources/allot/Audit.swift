import AllotCore
import AllotCoordinator
import AllotGateway
import ArgumentParser
import Foundation

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check and sum the chained audit trail; make its key.",
        subcommands: [Verify.self, Summary.self, Keygen.self])

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new random audit key (gateway.audit_key_file), mode 0600.")
        @Argument(help: "The key file to create (never overwritten).") var path: String
        func run() throws {
            try AuditLog.makeKey(path: path)
            print("wrote a 256-bit key to \(path) (mode 0600); set gateway.audit_key_file to it and keep a copy for allot audit verify --key")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check the chain; report the first broken record (exit 1).")
        @Argument(help: "Audit files in order, or a directory holding audit-*.jsonl.") var files: [String]
        @Option(help: "The trail's key file (gateway.audit_key_file); without it the chain is checked as plain SHA-256.") var key: String?
        @Option(help: "The coordinators' ledger (sqlite:PATH or postgres://…): also check the audit head the node reported there.") var ledger: String?
        @Option(help: "With --ledger: the gateway's node name (its certificate's name).") var node: String?

        func run() async throws {
            var head: AuditHead?
            if let ledger {
                guard let node else { throw ValidationError("--ledger needs --node (the gateway's name)") }
                let store: any LedgerStore
                switch try LedgerLocation(parsing: ledger) {
                case .none: throw ValidationError("--ledger none has no audit heads")
                case .sqlite(let path): store = try SQLiteLedger.open(path: path)
                case .postgres(let target): store = try PostgresLedger(target)
                }
                head = try await store.auditHead(node: node)
                await store.close()
                guard head != nil else { throw ValidationError("the ledger has no audit head for node \(node)") }
            }
            let report = AuditVerifier.verify(Audit.expand(files), key: try key.map { try AuditLog.loadKey(path: $0) }, head: head)
            if let b = report.firstBreak {
                print("BROKEN after \(report.records) good records: \(b)")
                throw ExitCode(1)
            }
            print("ok: \(report.records) records, chain intact" + (head.map { ", the ledger's head (\($0)) present" } ?? ""))
        }
    }

    struct Summary: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sum consumption per consumer, tier and model.")
        @Argument(help: "Audit files in order, or a directory holding audit-*.jsonl.") var files: [String]
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let totals = try AuditVerifier.summary(Audit.expand(files))
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.sortedKeys]
                print(String(decoding: try enc.encode(totals), as: UTF8.self))
                return
            }
            print("key                                admitted  denied  input_tokens  output_tokens  cost_micro_dollars")
            for (k, t) in totals.sorted(by: { $0.key < $1.key }) {
                print(k.padding(toLength: 35, withPad: " ", startingAt: 0)
                      + "\(t.admitted)".padding(toLength: 10, withPad: " ", startingAt: 0)
                      + "\(t.denied)".padding(toLength: 8, withPad: " ", startingAt: 0)
                      + "\(t.inputTokens)".padding(toLength: 14, withPad: " ", startingAt: 0)
                      + "\(t.outputTokens)".padding(toLength: 15, withPad: " ", startingAt: 0)
                      + "\(t.costMicroDollars)")
            }
        }
    }

    static func expand(_ paths: [String]) -> [URL] {
        paths.flatMap { p -> [URL] in
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: p, isDirectory: &isDir), isDir.boolValue {
                return AuditLog.files(in: URL(fileURLWithPath: p))
            }
            return [URL(fileURLWithPath: p)]
        }
    }
}
