import AllotCore
import NIOCore
import NIOHTTPTypes

/// Deadlines on a client connection of a gateway listener, so a slow or silent client cannot
/// hold it: the first request head within `header` of the connection, each body within `body`
/// of its head, and the next head within `idle` of the previous response's end. Nothing runs
/// while a response is being written (a long stream is the upstream's pace, not the client's).
/// A connection past a deadline is closed and counted (`allot_gateway_client_timeouts_total`).
/// How long a client may take to send a request's head and body, and stay idle between requests.
package struct ClientDeadlineLimits: Sendable {
    var header: Duration
    var body: Duration
    var idle: Duration
}

final class ClientDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    typealias Limits = ClientDeadlineLimits

    private let limits: Limits
    private let expired: @Sendable (_ kind: String) -> Void
    private var deadline: Scheduled<Void>?
    /// Requests whose head arrived and whose response has not ended.
    private var open = 0

    init(limits: Limits, expired: @escaping @Sendable (_ kind: String) -> Void) {
        self.limits = limits
        self.expired = expired
    }

    func handlerAdded(context: ChannelHandlerContext) {
        arm(context, limits.header, "header")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            open += 1
            arm(context, limits.body, "body")
        case .body:
            break
        case .end:
            // Answered already (an early 401 or 413): the next head is due within the idle time.
            if open == 0 { arm(context, limits.idle, "idle") } else {
                deadline?.cancel()
                deadline = nil
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            open = max(0, open - 1)
            if open == 0 { arm(context, limits.idle, "idle") }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext, _ after: Duration, _ kind: String) {
        deadline?.cancel()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let expired = self.expired
        deadline = context.eventLoop.scheduleTask(in: .nanoseconds(after.nanoseconds)) {
            expired(kind)
            bound.value.close(promise: nil)
        }
    }
}
