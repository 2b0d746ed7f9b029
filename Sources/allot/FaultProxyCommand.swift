import AllotConfig
import AllotCoordinator
import AllotTransport
import AllotTesting
import ArgumentParser
import Dispatch
import Foundation
import NIOPosix

struct FaultProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault-proxy",
        abstract: "A TCP proxy that injects latency, jitter and loss; SIGUSR1 partitions (cuts and refuses connections), SIGUSR2 heals.",
        discussion: "For fault rigs (cluster/netns) where tc netem is not available. Loss delays a chunk by --retransmit-ms, as TCP would after losing a segment.")

    @Option(help: "HOST:PORT to listen on.") var listen: String
    @Option(help: "HOST:PORT to forward to.") var upstream: String
    @Option(help: "Added latency per direction, milliseconds.") var latencyMs = 0
    @Option(help: "Uniform jitter around the latency, ± milliseconds.") var jitterMs = 0
    @Option(help: "Probability (0…1) that a chunk is delayed as if a segment were lost.") var loss = 0.0
    @Option(help: "The extra delay of a lost chunk, milliseconds.") var retransmitMs = 200

    func run() async throws {
        let (lh, lp) = try ConfigFields.address(listen, field: "--listen")
        let (uh, up) = try ConfigFields.address(upstream, field: "--upstream")
        guard (0...1).contains(loss) else { throw ValidationError("--loss must be between 0 and 1 (got \(loss))") }
        guard latencyMs >= 0, jitterMs >= 0, retransmitMs >= 0 else { throw ValidationError("delays must not be negative") }
        var s = FaultProxy.Settings()
        s.latency = .milliseconds(latencyMs)
        s.jitter = .milliseconds(jitterMs)
        s.loss = loss
        s.retransmit = .milliseconds(retransmitMs)
        let proxy = FaultProxy(upstreamHost: uh, upstreamPort: up, settings: s, group: MultiThreadedEventLoopGroup.singleton)
        let bound = try await proxy.start(host: lh, port: lp)
        print("allot fault-proxy \(lh):\(bound.port ?? lp) -> \(upstream), latency \(latencyMs)±\(jitterMs) ms, loss \(loss)")
        var sources: [any DispatchSourceSignal] = []
        for (sig, action) in [(SIGUSR1, { proxy.partition(); print("partitioned") }), (SIGUSR2, { proxy.heal(); print("healed") })] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig)
            src.setEventHandler(handler: action)
            src.resume()
            sources.append(src)
        }
        let stop = DispatchSemaphore(value: 0)
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig)
            src.setEventHandler { stop.signal() }
            src.resume()
            sources.append(src)
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                stop.wait()
                c.resume()
            }
        }
        await proxy.stop()
    }
}
