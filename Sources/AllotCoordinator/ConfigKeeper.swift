import AllotConfig
import AllotCoordination
import AllotCore
import AllotTransport
import AllotWire
import Foundation
import Logging
import Synchronization

/// The coordinator's policy — budgets, tiers and models (`PolicyDocument`) — versioned in the
/// ledger: `allot config apply` makes a new version (compare-and-set on the version number,
/// with the admin certificate's name as author and the diff as its change); every coordinator
/// puts the newest version in force as it learns it (`DirectoryKeeper.Poller`: at once on
/// PostgreSQL's NOTIFY, else within a second), between events, without a restart
/// (`CoordinatorMachine.reconfigure`). Version 0 is the policy of the file it started with.
public final class ConfigKeeper: Sendable {
    struct Current: Sendable {
        var version: Int64 = 0
        var yaml: String
    }

    let store: (any LedgerStore)?
    private let current: Mutex<Current>
    private let writing = AsyncLock()

    public init(policy: String, store: (any LedgerStore)?) {
        current = Mutex(Current(yaml: policy))
        self.store = store
    }

    /// The version in force here (0: the starting file's) and its document.
    public var version: Int64 { current.withLock { $0.version } }
    public var document: String { current.withLock { $0.yaml } }

    /// Reads the ledger's newest version and puts it in force on `core` when it is newer than
    /// the one held.
    public func refresh(_ core: CoordinatorCore, logger: Logger? = nil) async throws {
        guard let store, let head = try await store.head(of: .config) else { return }
        try adopt(head, core: core, logger: logger)
    }

    /// Puts `row` in force unless a version as new is already.
    private func adopt(_ row: DirectoryVersionRow, core: CoordinatorCore, logger: Logger?) throws {
        guard row.version > version else { return } // (read every second: parse only what is new)
        // A version is canonical already: checked and parsed once, as the file it came from.
        let deployment = try DeploymentConfig(yaml: row.document)
        // Under this lock, so two versions learned at once are applied in their order.
        let done = try current.withLock { c -> CoordinatorMachine.Reconfigured? in
            guard row.version > c.version else { return nil }
            let r = try core.reconfigure(deployment, now: WallClock.now())
            c = Current(version: row.version, yaml: row.document)
            core.directory.tiers = Set(deployment.tiers.map(\.name))
            return r
        }
        guard let done else { return }
        // Every connected gateway gets it (tiers, entitlements, models; they keep it on disk).
        if let f = frame(newerThan: 0) { for sink in core.nodeSinks { sink.send(f) } }
        logger?.notice("configuration version in force", metadata: [
            "allot.version": "\(row.version)", "allot.author": "\(row.author)",
            "allot.changed": "\(done.changed.count)", "allot.added": "\(done.added.count)",
            "allot.removed": "\(done.removed.count)", "allot.replaced": "\(done.replaced.count)",
        ])
    }

    /// The policy in force for a node that holds version `have` (request id 0: sent unasked);
    /// nil when it holds this one, or when the policy in force is the starting file's
    /// (version 0: gateways keep their own file's then).
    public func frame(newerThan have: UInt64) -> Allot_V1_Frame? {
        let c = current.withLock { $0 }
        guard c.version > 0, c.version > Int64(clamping: have) else { return nil }
        var r = Allot_V1_DirectoryResponse()
        (r.version, r.document, r.config) = (UInt64(c.version), Data(c.yaml.utf8), true)
        var f = Allot_V1_Frame()
        f.directoryResponse = r
        return f
    }

    /// What an apply did or would do.
    public struct Applied: Sendable {
        public var version: Int64
        public var summary: String
        public var diff: String
    }

    /// Checks `file` (a configuration file's text; only its budgets, tiers and models are
    /// taken) and, unless `dryRun`, makes it the next version by `author` and puts it in force
    /// here. A file with an error changes nothing and names the field.
    public func apply(file: String, author: String, dryRun: Bool, core: CoordinatorCore) async throws -> Applied {
        let doc = try PolicyDocument(file: file)
        guard let store else {
            throw AllotError(.invalidSettings, "this coordinator has no ledger: the configuration's versions live in the ledger (--ledger sqlite:PATH or postgres://...)")
        }
        return try await writing.run { [self] in
            if dryRun {
                try await refresh(core)
                let (version, old) = current.withLock { ($0.version, $0.yaml) }
                try doc.checkInPlace(from: old)
                let next = try doc.recordingRemovals(from: old, version: version + 1)
                return Applied(version: version, summary: next.summary(from: old), diff: next.diff(from: old))
            }
            var applied = Applied(version: 0, summary: "", diff: "")
            let row = try await store.appendNext(to: .config, refresh: { try await self.refresh(core) }) { [self] in
                let (version, old) = current.withLock { ($0.version, $0.yaml) }
                // The removals are the coordinator's to record (every gateway decides them alike).
                let next = try doc.recordingRemovals(from: old, version: version + 1)
                applied = Applied(version: version + 1, summary: next.summary(from: version == 0 && old.isEmpty ? nil : old),
                                  diff: next.diff(from: old))
                guard next.yaml != old else { throw Self.noChange(version) }
                try doc.checkInPlace(from: old)
                return DirectoryVersionRow(version: version + 1, author: author, created: WallClock.now(),
                                           change: applied.summary + "\n" + applied.diff, document: next.yaml)
            }
            try adopt(row, core: core, logger: nil)
            return applied
        }
    }

    /// The most of a diff an answer carries (a frame is 1 MiB by default).
    static let answerBytes = 256 * 1024

    /// `text` cut to at most `bytes` (at a line), saying how many lines were left out.
    static func clip(_ text: String, to bytes: Int) -> String {
        guard text.utf8.count > bytes else { return text }
        var out = "", used = 0, left = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if left == 0 && used + line.utf8.count + 1 <= bytes - 64 {
                out += line + "\n"
                used += line.utf8.count + 1
            } else {
                left += 1
            }
        }
        return out + "… \(left) more lines (allot config export for the whole version)"
    }

    static func noChange(_ version: Int64) -> AllotError {
        AllotError(.invalidSettings, "the file's budgets, tiers and models are those of version \(version) already: nothing to apply")
    }

    /// An admin's request (`allot config`): apply `policy`, or read the version in force and
    /// the history. The answer goes to `reply`.
    func handle(_ r: Allot_V1_DirectoryRequest, from identity: PeerIdentity, reply: any FrameSink, core: CoordinatorCore) {
        if identity.role == .node {
            if let f = frame(newerThan: r.have) { reply.send(f) }
            return
        }
        answerAdmin(r, of: .config, store: store, reply: reply) { [self] answer in
            if !r.policy.isEmpty {
                let a = try await apply(file: String(decoding: r.policy, as: UTF8.self), author: identity.name, dryRun: r.dryRun, core: core)
                (answer.summary, answer.diff) = (a.summary, Self.clip(a.diff, to: Self.answerBytes))
            }
            let c = current.withLock { $0 }
            answer.version = UInt64(max(0, c.version))
            // The document only for an export: an answer must fit in one frame.
            if r.policy.isEmpty && r.history == 0 { answer.document = Data(c.yaml.utf8) }
        }

    }
}
