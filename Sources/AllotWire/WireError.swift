import AllotCore

/// Why a frame could not be read or written. Stable codes; the message says what to do.
public typealias WireError = CodedError<WireErrorCode>

public enum WireErrorCode: String, ErrorCode {
    /// The length prefix announced more than the maximum frame size.
    case frameTooLarge = "frame_too_large"
    /// A length prefix of zero.
    case emptyFrame = "empty_frame"
    /// The frame's bytes are not a valid `Frame` message.
    case malformedFrame = "malformed_frame"
    /// The connection ended in the middle of a frame.
    case truncatedFrame = "truncated_frame"
    /// A repeated field holds more entries than the limit (counted before decoding).
    case tooManyItems = "too_many_items"
    /// This side could not encode a frame (above the limit): the connection is closed,
    /// nothing more is written to it.
    case unsendable = "unsendable"
}

/// Protocol constants and limits.
public enum WireProtocol {
    /// The protocol version this build speaks. A peer announcing another is refused.
    public static let version: UInt32 = 1
    /// Length prefix size (big-endian UInt32).
    public static let lengthPrefixBytes = 4
    /// Default hard limit on one frame's body; checked on the prefix, before allocating.
    public static let defaultMaxFrameBytes = 1 << 20
    /// Default limit on acquires, releases or grants in one frame.
    public static let defaultMaxItemsPerFrame = 1024
    /// Largest count of units a frame may carry in any field (2^62): any two add up without
    /// overflow. Acquires and releases beyond it, or below 0, are refused; grants are clamped.
    public static let maxUnits: Int64 = Checked.maxUnits
    /// Longest lease a grant may announce, and longest retry-after (clamped on receipt).
    public static let maxLeaseTTL: Duration = .seconds(86_400)
    public static let maxRetryAfter: Duration = .seconds(60)
    /// Longest budget id (bytes of UTF-8) a frame may carry; longer ones are refused.
    public static let maxBudgetIDBytes = 512
}
