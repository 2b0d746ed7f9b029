import Foundation
import Testing

/// The `allot` binary answers bad input with a clear error and a non-zero exit.
@Suite("allot simulate command line")
struct CommandLineTests {
    /// The binary `swift build` put next to the test bundle.
    static var binary: URL? {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for config in ["debug", "release"] {
            let url = root.appendingPathComponent(".build/\(config)/allot")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    func run(_ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = try #require(Self.binary, "build the allot binary first (swift build)")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test("unknown scenario, unknown strategy and out-of-range numbers are refused")
    func badInput() throws {
        let cases: [([String], String)] = [
            (["simulate", "--scenario", "tsunami"], "unknown scenario 'tsunami'"),
            (["simulate", "--strategies", "allot,magic"], "unknown strategy 'magic'"),
            (["simulate", "--nodes", "0"], "--nodes must be between 1 and 4096"),
            (["simulate", "--seconds=-1"], "--seconds must be in (0, 3600]"),
        ]
        for (args, message) in cases {
            let r = try run(args)
            #expect(r.status != 0, "\(args) should fail")
            #expect(r.output.contains(message), "\(args): \(r.output)")
        }
    }

    @Test("the same seed gives the same report in separate processes (no hash-order dependence)")
    func deterministicAcrossProcesses() throws {
        let args = ["simulate", "--scenario", "shift", "--nodes", "8", "--seconds", "6", "--seed", "2", "--json"]
        let a = try run(args), b = try run(args)
        #expect(a.status == 0 && a.output == b.output)
    }

    @Test("a small run prints the table and JSON")
    func smallRun() throws {
        let r = try run(["simulate", "--scenario", "steady", "--nodes", "2", "--seconds", "1", "--json"])
        #expect(r.status == 0)
        #expect(r.output.contains("\"scenario\":\"steady\""))
    }
}
