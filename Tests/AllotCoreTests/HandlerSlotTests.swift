import Foundation
import Synchronization
import Testing
@testable import AllotCore

/// A callback kept in a `Mutex` as a bare closure was rewrapped in two reabstraction thunks
/// by every `withLock`: the call stack under the handler grew by two frames per call, so a
/// node's decisions slowed down with every wake-up it asked for (3 → 21 µs p50 in the
/// benchmark) and a long-lived process would in time overflow its stack. These tests count
/// the frames under the handler (`Thread.callStackSymbols`, at most 128, so the first call
/// must be below that for the test to mean anything): with the bare closure they were 11 on
/// the first call and 128 (the cap) by the 200th.
@Suite("Handler slots")
struct HandlerSlotTests {
    @Test("the call stack under a handler does not grow with calls")
    func constantDepth() {
        let slot = HandlerSlot<Int>()
        let depths = Mutex<[Int: Int]>([:])
        slot.set { i in if i == 1 || i == 200 { depths.withLock { $0[i] = Thread.callStackSymbols.count } } }
        for i in 1...200 { #expect(slot(i)) }
        let d = depths.withLock { $0 }
        #expect(d[1] != nil && d[1]! < 128 && d[1] == d[200])
        slot.set(nil)
        #expect(!slot(201))
    }

    @Test("a node's wake handler, called from reserve, does not grow either")
    func enforcerWakeDepth() throws {
        let e = try SharedEnforcer(settings: EnforcerSettings(node: NodeID("n")))
        let set = BudgetSet(e.register(rateBudget()))
        let depths = Mutex<[Int]>([])
        e.onWantsPoll { depths.withLock { $0.append(Thread.callStackSymbols.count) } }
        for i in 0..<200 {
            // No lease: the reserve is refused and asks for a poll; the poll clears the ask.
            _ = e.reserve(Cost(requests: 1, tokens: 1), on: set, now: at(Double(i)))
            _ = e.withEnforcer { $0.poll(now: at(Double(i))) }
        }
        let d = depths.withLock { $0 }
        #expect(d.count == 200 && d[0] < 128)
        #expect(Set(d).count == 1)
    }
}

