@testable import AllotCoordinator
import AllotCore
import AllotTransport
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

/// The coordinator's wake-up timer on an `EmbeddedEventLoop` (its time advanced by hand):
/// one armed deadline, moved earlier by offers, at most one tick per `spacing`, at least one
/// per `longest`, nothing after `stop`.
@Suite("Wake timer (embedded event loop)")
struct WakeTimerTests {
    final class Fired: Sendable {
        let count = Mutex(0)
        var value: Int { count.withLock { $0 } }
    }

    static func timer(_ loop: EmbeddedEventLoop, _ fired: Fired) -> WakeTimer {
        WakeTimer(loop: loop, spacing: .milliseconds(100), longest: .seconds(1)) { _ in fired.count.withLock { $0 += 1 } }
    }

    @Test("an offered deadline fires once, about when it is due; a later offer does not move it, an earlier one does")
    func firesAtDeadline() {
        let loop = EmbeddedEventLoop(), fired = Fired()
        let t = Self.timer(loop, fired)
        t.offer(WallClock.now() + .milliseconds(500))
        t.offer(WallClock.now() + .milliseconds(900)) // later: the armed one stays
        loop.advanceTime(by: .milliseconds(450))
        #expect(fired.value == 0)
        loop.advanceTime(by: .milliseconds(100))
        #expect(fired.value == 1)
        // Earlier than nothing armed, then earlier still: one fire, at the earlier.
        t.offer(WallClock.now() + .milliseconds(800))
        t.offer(WallClock.now() + .milliseconds(300))
        loop.advanceTime(by: .milliseconds(350))
        #expect(fired.value == 2)
        loop.advanceTime(by: .seconds(2))
        #expect(fired.value == 2, "the replaced timer never fires")
    }

    @Test("after a tick, the next is at least `spacing` away even for a deadline already due; nothing due, at most `longest` away")
    func spacingAndLongest() {
        let loop = EmbeddedEventLoop(), fired = Fired()
        let t = Self.timer(loop, fired)
        t.offer(WallClock.now())
        loop.advanceTime(by: .milliseconds(5))
        #expect(fired.value == 1)
        t.offer(WallClock.now()) // due at once, but a tick just ran
        loop.advanceTime(by: .milliseconds(50))
        #expect(fired.value == 1)
        loop.advanceTime(by: .milliseconds(100))
        #expect(fired.value == 2)
        t.offer(.distantFuture)
        loop.advanceTime(by: .milliseconds(900))
        #expect(fired.value == 2)
        loop.advanceTime(by: .milliseconds(200))
        #expect(fired.value == 3, "nothing due: woken within `longest` anyway")
    }

    @Test("stopped, it fires no more")
    func stop() {
        let loop = EmbeddedEventLoop(), fired = Fired()
        let t = Self.timer(loop, fired)
        t.offer(WallClock.now() + .milliseconds(100))
        t.stop()
        t.offer(WallClock.now() + .milliseconds(50))
        loop.advanceTime(by: .seconds(5))
        #expect(fired.value == 0)
    }
}
