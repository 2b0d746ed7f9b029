import NIOCore
import SwiftProtobuf

/// Splits a byte stream into `Frame`s: a 4-byte big-endian length, then that many bytes of
/// protobuf. The length is checked against `maxFrameBytes` before anything is allocated.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = Allot_V1_Frame

    public let maxFrameBytes: Int
    /// Entries a repeated field may hold, counted on the bytes before anything is decoded.
    public let maxItems: Int

    public init(maxFrameBytes: Int = WireProtocol.defaultMaxFrameBytes, maxItems: Int = WireProtocol.defaultMaxItemsPerFrame) {
        self.maxFrameBytes = maxFrameBytes
        self.maxItems = maxItems
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.decodeOne(&buffer, maxFrameBytes: maxFrameBytes, maxItems: maxItems) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 {
            let n = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: n)
            throw WireError(.truncatedFrame, "the connection ended \(n) bytes into a frame")
        }
        return .needMoreData
    }

    /// Decodes one frame from the front of `buffer`, or returns nil when it is incomplete.
    public static func decodeOne(_ buffer: inout ByteBuffer, maxFrameBytes: Int, maxItems: Int = .max) throws -> Allot_V1_Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= maxFrameBytes else {
            throw WireError(.frameTooLarge, "a frame of \(length) bytes exceeds the maximum of \(maxFrameBytes)")
        }
        guard length > 0 else { throw WireError(.emptyFrame, "a frame of 0 bytes") }
        guard buffer.readableBytes >= WireProtocol.lengthPrefixBytes + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: WireProtocol.lengthPrefixBytes)
        let bytes = Array(buffer.readSlice(length: Int(length))!.readableBytesView)
        switch RepeatedFieldScan.scan(bytes) {
        case .unreadable:
            throw WireError(.malformedFrame, "\(length) bytes that are not a Frame (unreadable fields)")
        case .largest(let field, let count) where count > maxItems:
            throw WireError(.tooManyItems, "a frame whose \(field) holds \(count) entries; the maximum is \(maxItems)")
        default:
            break
        }
        do {
            return try Allot_V1_Frame(serializedBytes: bytes)
        } catch {
            throw WireError(.malformedFrame, "\(length) bytes that are not a Frame: \(error)")
        }
    }
}

/// Writes `Frame`s with their length prefix.
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Allot_V1_Frame

    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = WireProtocol.defaultMaxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    public func encode(data: Allot_V1_Frame, out: inout ByteBuffer) throws {
        try Self.encode(data, into: &out, maxFrameBytes: maxFrameBytes)
    }

    public static func encode(_ frame: Allot_V1_Frame, into out: inout ByteBuffer, maxFrameBytes: Int) throws {
        let bytes: [UInt8] = try frame.serializedBytes()
        guard bytes.count <= maxFrameBytes else {
            throw WireError(.unsendable, "refusing to send a frame of \(bytes.count) bytes (maximum \(maxFrameBytes)); send fewer items per frame")
        }
        guard !bytes.isEmpty else { throw WireError(.unsendable, "refusing to send an empty frame") }
        out.writeInteger(UInt32(bytes.count))
        out.writeBytes(bytes)
    }
}
