/// A binary min-heap of events ordered by (time, insertion order): ties resolve in the
/// order events were scheduled, so runs are deterministic.
struct EventQueue<Event> {
    private struct Entry {
        var time: Int64
        var seq: UInt64
        var event: Event
    }
    private var heap: [Entry] = []
    private var seq: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }
    var count: Int { heap.count }
    var peekTime: Int64? { heap.first?.time }

    mutating func push(_ time: Int64, _ event: Event) {
        seq += 1
        heap.append(Entry(time: time, seq: seq, event: event))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(heap[i], heap[p]) { heap.swapAt(i, p); i = p } else { break }
        }
    }

    mutating func pop() -> (Int64, Event)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n && less(heap[l], heap[m]) { m = l }
            if r < n && less(heap[r], heap[m]) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.event)
    }

    private func less(_ a: Entry, _ b: Entry) -> Bool {
        a.time != b.time ? a.time < b.time : a.seq < b.seq
    }
}

/// A run's timeline: the trace's arrivals merged with scheduled events, in time order
/// (an arrival first on a tie), until the scenario's end.
struct Replay<Event> {
    enum Step {
        case arrival(Int)
        case event(Event)
    }

    private var queue = EventQueue<Event>()
    private var nextArrival = 0
    private let arrivals: [Int64]
    private let end: Int64

    init(trace: [Arrival], end: Int64) {
        arrivals = trace.map(\.time)
        self.end = end
    }

    mutating func schedule(_ time: Int64, _ event: Event) { queue.push(time, event) }

    /// The next thing that happens, or nil when the run is over.
    mutating func next() -> (time: Int64, step: Step)? {
        let arrivalT = nextArrival < arrivals.count ? arrivals[nextArrival] : Int64.max
        let eventT = queue.peekTime ?? Int64.max
        let t = min(arrivalT, eventT)
        guard t < end else { return nil }
        if arrivalT <= eventT {
            nextArrival += 1
            return (t, .arrival(nextArrival - 1))
        }
        return (t, .event(queue.pop()!.1))
    }
}
