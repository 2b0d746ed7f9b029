import AllotConfig
import AllotCore
import AllotGateway
import AllotWire
import ArgumentParser
import Foundation

/// `allot config`: the deployment's budgets, tiers and models, versioned in the ledger.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Apply, export and list versions of the budgets, tiers and models (kept in the ledger; in force on every coordinator without a restart).",
        subcommands: [Apply.self, Export.self, History.self])

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a file's budgets, tiers and models the next version (prints the diff). A file with an error changes nothing and names the field.")
        @OptionGroup var target: AdminTarget
        @Option(name: .customShort("f"), help: "The configuration file (its other sections are ignored).") var file: String
        @Flag(help: "Only print what would change.") var dryRun = false

        func run() async throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read \(file)")
            }
            // Checked here first (the coordinator checks again): the gateway's sections too.
            let doc: PolicyDocument
            do {
                doc = try PolicyDocument(file: text)
                _ = try GatewayConfig(yaml: doc.yaml)
            } catch let e as AllotError {
                throw ValidationError("\(file): \(e.message); nothing was applied")
            }
            var r = Allot_V1_DirectoryRequest()
            (r.config, r.policy, r.dryRun) = (true, Data(doc.yaml.utf8), dryRun)
            let answer = try await target.send(r)
            print(dryRun ? "would change version \(answer.version): \(answer.summary)" : "configuration version \(answer.version): \(answer.summary)")
            if !answer.diff.isEmpty { print(answer.diff) }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the version in force as YAML (budgets, tiers, models).")
        @OptionGroup var target: AdminTarget

        func run() async throws {
            var r = Allot_V1_DirectoryRequest()
            r.config = true
            let answer = try await target.send(r)
            print("# allot configuration version \(answer.version)")
            print(String(decoding: answer.document, as: UTF8.self), terminator: "")
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The versions, newest first: author, time, what changed and the diff.")
        @OptionGroup var target: AdminTarget
        @Option(help: "How many versions.") var last = 20

        func run() async throws {
            for v in try await target.history(config: true, last: last) {
                let lines = v.change.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
                print("version \(v.version)  \(Instant(nanoseconds: v.createdUnixNs))  by \(v.author)  \(lines.first ?? "")")
                if lines.count > 1 { print(lines[1]) }
            }
        }
    }
}
