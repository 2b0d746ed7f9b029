import AllotFuzzing
import Foundation
import Testing

/// Issue 15, must-show 4 (CI part): the fuzz corpus kept in `Tests/fuzz-corpus` (seed inputs,
/// and any crash input once fixed) replayed through the coordinator's input path, then a
/// bounded run of seeded mutations. Long runs: `scripts/fuzz.sh SECONDS` (docs/security.md).
@Suite("Fuzz corpus replay")
struct FuzzCorpusTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz-corpus")

    @Test("every corpus input, then 30,000 seeded mutations of them: no trap, and the seed inputs decode")
    func replay() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter { $0.hasSuffix(".bin") }.sorted()
        let corpus = try files.map { Array(try Data(contentsOf: Self.directory.appendingPathComponent($0))) }
        // The seed corpus is all there (a rename or loss would silently shrink the replay).
        #expect(Set(FrameFuzzer.seedCorpus().keys.map { "\($0).bin" }).isSubset(of: Set(files)))
        var fuzzer = try FrameFuzzer(seed: 15)
        for (name, input) in zip(files, corpus) {
            #expect(fuzzer.feed(input) > 0, "\(name) decodes to no frame")
        }
        for i in 0..<30_000 {
            let input = fuzzer.mutate(corpus[i % corpus.count], other: corpus[(i / corpus.count) % corpus.count])
            fuzzer.feed(input)
        }
    }
}
