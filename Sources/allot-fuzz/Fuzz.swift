import AllotFuzzing
import Foundation

#if FUZZING
// libFuzzer: `swift build --product allot-fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING`
// (scripts/fuzz.sh does it). Each input is a byte stream from one peer, fed through the frame
// decoder, the session and a fresh coordinator core; libFuzzer's coverage guides the mutations.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    var seed: UInt64 = 0xA110
    for b in bytes.prefix(16) { seed = seed &* 31 &+ UInt64(b) }
    guard var fuzzer = try? FrameFuzzer(seed: seed) else { return 0 }
    fuzzer.feed(bytes)
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point as `<module>_main`: hand over to libFuzzer's driver.
@_cdecl("allot_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var vector = argv
    return LLVMFuzzerRunDriver(&count, &vector, fuzzOneInput)
}
#else
/// allot-fuzz — the seeded random-frame fuzzer (no libFuzzer needed):
///   allot-fuzz --corpus DIR --seconds N [--seed S]   mutate DIR's inputs for N seconds
///   allot-fuzz --write-corpus DIR                      (re)write the seed corpus
/// Before each input it is written to `fuzz-last-input.bin` (in the working directory), so the
/// input of a crash is kept; exit 0 means no crash.
@main
struct SeededFuzz {
    static func main() throws {
        let args = Array(CommandLine.arguments.dropFirst())
        func option(_ name: String) -> String? {
            guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
            return args[i + 1]
        }
        if let dir = option("--write-corpus") {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for (name, bytes) in FrameFuzzer.seedCorpus() { try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(name).bin")) }
            print("wrote \(FrameFuzzer.seedCorpus().count) inputs to \(dir)")
            return
        }
        let dir = option("--corpus") ?? "Tests/fuzz-corpus"
        let seconds = Double(option("--seconds") ?? "10") ?? 10
        let seed = UInt64(option("--seed") ?? "") ?? UInt64(Date().timeIntervalSince1970 * 1000)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasSuffix(".bin") }.sorted() ?? []
        let corpus = files.compactMap { FileManager.default.contents(atPath: "\(dir)/\($0)").map { Array($0) } }
        guard !corpus.isEmpty else {
            print("allot-fuzz: no .bin inputs in \(dir)")
            exit(2)
        }
        var fuzzer = try FrameFuzzer(seed: seed)
        let last = URL(fileURLWithPath: "fuzz-last-input.bin")
        let end = Date().addingTimeInterval(seconds)
        var runs = 0, frames = 0
        print("allot-fuzz: seed \(seed), \(corpus.count) corpus inputs, \(Int(seconds)) s")
        while Date() < end {
            for _ in 0..<100 {
                let a = corpus[runs % corpus.count], b = corpus[(runs / corpus.count + 7) % corpus.count]
                let input = runs < corpus.count ? a : fuzzer.mutate(a, other: b)
                try? Data(input).write(to: last)
                frames += fuzzer.feed(input)
                runs += 1
            }
        }
        try? FileManager.default.removeItem(at: last)
        print("allot-fuzz: \(runs) inputs, \(frames) frames decoded, 0 crashes (seed \(seed))")
    }
}
#endif
