import AllotConfig
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The coordinator's copy of the consumer directory (`Directory`), kept in the ledger:
/// applies admins' changes as new versions (compare-and-set on the version number, so two
/// coordinators sharing a PostgreSQL ledger never lose one), learns versions other
/// coordinators wrote by reading the head every `pollInterval`, and sends the directory to
/// nodes: to one that asks with an older version, and to every connected node when a new
/// version is made or learned.
public final class DirectoryKeeper: Sendable {
    struct Current: Sendable {
        var version: Int64 = 0
        var directory = Directory()
        var document = Data()
    }

    /// The tiers a consumer may be given (those of the policy in force).
    private let tierNames: Mutex<Set<String>>
    var tiers: Set<String> {
        get { tierNames.withLock { $0 } }
        set { tierNames.withLock { $0 = newValue } }
    }
    let store: (any LedgerStore)?
    /// The most the encoded directory may take: it travels in one frame, to gateways whose
    /// frames are at most the default size.
    let maxBytes: Int
    private let current = Mutex(Current())
    /// One change at a time from this coordinator (others are serialized by the version).
    private let writing = AsyncLock()

    public init(tiers: Set<String>, store: (any LedgerStore)?, maxFrameBytes: Int = WireProtocol.defaultMaxFrameBytes) {
        tierNames = Mutex(tiers)
        self.store = store
        maxBytes = max(0, min(maxFrameBytes, WireProtocol.defaultMaxFrameBytes) - 4_096)
    }

    public var version: Int64 { current.withLock { $0.version } }
    public var directory: Directory { current.withLock { $0.directory } }

    /// Reads the ledger's newest version; true when it is newer than the one held (then held).
    @discardableResult
    public func refresh() async throws -> Bool {
        guard let store, let head = try await store.directoryHead() else { return false }
        return try adopt(head)
    }

    private func adopt(_ row: DirectoryVersionRow) throws -> Bool {
        let d = try Directory(decoding: Data(row.document.utf8))
        return current.withLock { c in
            guard row.version > c.version else { return false }
            c = Current(version: row.version, directory: d, document: Data(row.document.utf8))
            return true
        }
    }

    /// The directory as a frame (request id 0: sent unasked).
    public func frame(requestID: UInt64 = 0) -> Allot_V1_Frame {
        let c = current.withLock { $0 }
        var r = Allot_V1_DirectoryResponse()
        r.requestID = requestID
        r.version = UInt64(max(0, c.version))
        r.document = c.document
        var f = Allot_V1_Frame()
        f.directoryResponse = r
        return f
    }

    /// The directory for a node that holds version `have`; nil when it has this one already.
    public func frame(newerThan have: UInt64) -> Allot_V1_Frame? {
        version > Int64(clamping: have) ? frame() : nil
    }

    /// A node's or an admin's request; the answer goes to `reply`, and a new version to
    /// every sink `nodes` gives.
    public func handle(_ r: Allot_V1_DirectoryRequest, from identity: PeerIdentity, reply: any FrameSink,
                       nodes: @escaping @Sendable () -> [any FrameSink]) {
        if identity.role == .node {
            if let f = frame(newerThan: r.have) { reply.send(f) }
            return
        }
        answerAdmin(r, of: .directory, store: store, reply: reply) { [self] answer in
            if !r.change.isEmpty {
                (_, answer.summary) = try await apply(try Directory.decode(change: r.change), author: identity.name, nodes: nodes)
            }
            let c = current.withLock { $0 }
            answer.version = UInt64(max(0, c.version))
            answer.document = c.document
        }
    }

    /// Applies `change` as a new version by `author` and sends it to every sink `nodes` gives;
    /// returns the version and what it did.
    public func apply(_ change: Directory.Change, author: String, nodes: @Sendable () -> [any FrameSink]) async throws -> (Int64, String) {
        let (row, summary) = try await self.change(change, author: author)
        let f = frame()
        for sink in nodes() { sink.send(f) }
        return (row.version, summary)
    }

    /// Applies `change` on the newest version as the next one, by `author`; redone on the new
    /// head when another coordinator wrote first (for up to five seconds).
    func change(_ change: Directory.Change, author: String) async throws -> (DirectoryVersionRow, String) {
        guard let store else {
            throw AllotError(.invalidSettings, "this coordinator has no ledger: the consumer directory lives in the ledger (--ledger sqlite:PATH or postgres://...)")
        }
        if case .createKey(let k, _) = change, let e = k.expires_unix_ns, e <= WallClock.now().nanoseconds {
            throw AllotError(.invalidSettings, "the key's expiry is in the past (by this coordinator's clock)")
        }
        return try await writing.run { [self] in
            var summary = ""
            let row = try await store.appendNext(to: .directory, refresh: { try await self.refresh() }) { [self] in
                let (version, base) = current.withLock { ($0.version, $0.directory) }
                var next = base
                summary = try next.apply(change, tiers: tiers, maxBytes: maxBytes)
                return DirectoryVersionRow(version: version + 1, author: author, created: WallClock.now(), change: summary,
                                           document: String(decoding: next.encoded(), as: UTF8.self))
            }
            _ = try adopt(row)
            return (row, summary)
        }
    }

    /// Reads the ledger's heads (the directory's and the policy's) every `interval`, and at once
    /// when PostgreSQL notifies that another coordinator appended a version; sends a newer
    /// directory to every node and puts a newer policy in force (`ConfigKeeper`): how a
    /// coordinator learns a version another one wrote.
    public struct Poller: Service {
        let core: CoordinatorCore
        let interval: Duration
        let logger: Logger

        public init(core: CoordinatorCore, interval: Duration = .seconds(1), logger: Logger) {
            (self.core, self.interval, self.logger) = (core, interval, logger)
        }

        public func run() async throws {
            // A service that returns stops its group: without a ledger, wait for the shutdown.
            guard core.directory.store != nil else { return try await gracefulShutdown() }
            var failing = false
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                do {
                    if try await core.directory.refresh() {
                        let f = core.directory.frame()
                        for sink in core.nodeSinks { sink.send(f) }
                        logger.info("consumer directory", metadata: ["allot.version": "\(core.directory.version)"])
                    }
                    try await core.config.refresh(core, logger: logger)
                    failing = false
                } catch {
                    if !failing { logger.warning("cannot read the consumer directory or the policy", metadata: ["allot.error": "\(error)"]) }
                    failing = true
                }
                if let store = core.directory.store {
                    try? await cancelWhenGracefulShutdown { await store.waitForVersions(timeout: interval) }
                }
            }
        }
    }
}

/// Runs async bodies one at a time.
final class AsyncLock: Sendable {
    private let tail = Mutex<Task<Void, Never>?>(nil)

    func run<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let mine = tail.withLock { t -> Task<Result<T, any Error>, Never> in
            let before = t
            let task = Task { () -> Result<T, any Error> in
                await before?.value
                do { return .success(try await body()) } catch { return .failure(error) }
            }
            t = Task { _ = await task.value }
            return task
        }
        return try await mine.value.get()
    }
}

/// Answers an admin's request about a versioned document: `body` fills the answer (and may
/// change the document); then the history it asked for. The answer, or the error that
/// stopped `body` (nothing changed then), goes to `reply` with the request's id.
func answerAdmin(_ r: Allot_V1_DirectoryRequest, of document: VersionedDocument, store: (any LedgerStore)?, reply: any FrameSink,
                 _ body: @escaping @Sendable (inout Allot_V1_DirectoryResponse) async throws -> Void) {
    Task {
        var answer = Allot_V1_DirectoryResponse()
        answer.requestID = r.requestID
        do {
            try await body(&answer)
            if let store, r.history > 0 {
                // Each change clipped, and no more versions than fit in one frame.
                var room = ConfigKeeper.answerBytes * 2
                for row in try await store.history(of: document, limit: Int(r.history)) {
                    var v = Allot_V1_DirectoryVersion()
                    (v.version, v.author, v.createdUnixNs) = (UInt64(row.version), row.author, row.created.nanoseconds)
                    v.change = ConfigKeeper.clip(row.change, to: min(room, 64 * 1024))
                    room -= v.change.utf8.count + v.author.utf8.count + 32
                    answer.history.append(v)
                    if room < 1_024 { break }
                }
            }
        } catch let e as AllotError {
            answer.error = e.message
        } catch {
            answer.error = "\(error)"
        }
        var f = Allot_V1_Frame()
        f.directoryResponse = answer
        reply.send(f)
    }
}
