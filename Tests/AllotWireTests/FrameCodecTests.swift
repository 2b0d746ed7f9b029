import AllotCore
import AllotWire
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@Suite("Framing")
struct FrameCodecTests {
    func encoded(_ frames: [Allot_V1_Frame]) throws -> ByteBuffer {
        var b = ByteBuffer()
        for f in frames { try FrameEncoder.encode(f, into: &b, maxFrameBytes: WireProtocol.defaultMaxFrameBytes) }
        return b
    }

    var sample: [Allot_V1_Frame] {
        [.hello(name: "gw-1"),
         .acquire([AcquireRequest(requestID: 7, node: "ignored", budget: "tpm/consumer=a", want: 100, demandRate: 50)]),
         .heartbeat(3, reply: false)]
    }

    @Test("the decoder splits any byte stream into the same frames (NIOTestUtils verifier)")
    func verifier() throws {
        let frames = sample
        var inputs: [(ByteBuffer, [Allot_V1_Frame])] = []
        for f in frames { inputs.append((try encoded([f]), [f])) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: inputs) { FrameDecoder() }
    }

    @Test("a length prefix above the maximum is refused before anything is allocated")
    func tooLarge() throws {
        var b = ByteBuffer()
        b.writeInteger(UInt32.max)
        b.writeBytes([1, 2, 3])
        #expect { try FrameDecoder.decodeOne(&b, maxFrameBytes: 1024) } throws: { ($0 as! WireError).code == .frameTooLarge }
        var ok = try encoded([.hello(name: String(repeating: "x", count: 2000))])
        #expect { try FrameDecoder.decodeOne(&ok, maxFrameBytes: 1024) } throws: { ($0 as! WireError).code == .frameTooLarge }
        var out = ByteBuffer()
        #expect { try FrameEncoder.encode(.hello(name: String(repeating: "x", count: 2000)), into: &out, maxFrameBytes: 1024) } throws: {
            ($0 as! WireError).code == .unsendable
        }
    }

    @Test("garbage bytes, an empty frame and a truncated frame are errors with their own codes")
    func malformed() throws {
        var garbage = ByteBuffer()
        garbage.writeInteger(UInt32(4))
        garbage.writeBytes([0xFF, 0xFF, 0xFF, 0xFF])
        #expect { try FrameDecoder.decodeOne(&garbage, maxFrameBytes: 1024) } throws: { ($0 as! WireError).code == .malformedFrame }
        var empty = ByteBuffer()
        empty.writeInteger(UInt32(0))
        #expect { try FrameDecoder.decodeOne(&empty, maxFrameBytes: 1024) } throws: { ($0 as! WireError).code == .emptyFrame }

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var partial = try encoded([.hello(name: "gw")])
        partial.moveWriterIndex(to: partial.writerIndex - 2)
        try channel.writeInbound(partial)
        #expect(try channel.readInbound(as: Allot_V1_Frame.self) == nil)
        #expect { try channel.finish() } throws: { ($0 as? WireError)?.code == .truncatedFrame }
    }

    @Test("a valid frame followed by garbage: the frame is delivered, then the garbage is an error")
    func garbageAfterValid() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var b = try encoded([.hello(name: "gw")])
        b.writeInteger(UInt32(3))
        b.writeBytes([0xFF, 0xFF, 0xFF])
        #expect { try channel.writeInbound(b) } throws: { ($0 as? WireError)?.code == .malformedFrame }
        #expect(try channel.readInbound(as: Allot_V1_Frame.self)?.kind == "hello")
        _ = try? channel.finish()
    }

    @Test("an unknown message type decodes to a frame without a body (a newer peer), not an error")
    func unknownBody() throws {
        var b = ByteBuffer()
        // Field 99, varint 1: a body this version does not know.
        let bytes: [UInt8] = [0x98, 0x06, 0x01]
        b.writeInteger(UInt32(bytes.count))
        b.writeBytes(bytes)
        let f = try #require(try FrameDecoder.decodeOne(&b, maxFrameBytes: 1024))
        #expect(f.body == nil && f.kind == "unknown")
    }

    @Test("engine messages survive the wire unchanged (the node comes from the certificate)")
    func conversions() throws {
        let a = AcquireRequest(requestID: 9, node: "gw-1", budget: "b", want: 5, demandRate: 6, leaseID: 7, epoch: 2,
                               consumed: 3, released: 1, holding: 4, available: 2, rateInUse: 11, capacityInUse: 12,
                               appliedSequence: 13)
        #expect(AcquireRequest(wire: a.wire, node: "gw-1") == a)
        let g = Grant(requestID: 9, budget: "b", leaseID: 7, epoch: 2, amount: 100, ttl: .seconds(10), adopted: true,
                      retryAfter: .milliseconds(250), rate: 50, capacity: 60, sequence: 4)
        #expect(Grant(wire: g.wire) == g)
        let r = ReleaseRequest(node: "gw-1", budget: "b", leaseID: 7, consumed: 10, released: 20, final: true)
        #expect(ReleaseRequest(wire: r.wire, node: "gw-1") == r)
    }
}
