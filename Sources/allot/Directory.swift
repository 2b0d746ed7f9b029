import AllotConfig
import AllotCore
import AllotGateway
import AllotTransport
import AllotWire
import ArgumentParser
import Foundation
import NIOPosix

/// How the directory commands reach a coordinator: its address and an admin certificate
/// (whose name is the author of each change).
struct AdminTarget: ParsableArguments {
    @Option(help: "The coordinator, HOST:PORT.") var coordinator: String
    @Option(help: "Directory with ca.pem, trust-domain and the admin certificate.") var tlsDir: String
    @Option(help: "Admin certificate name (admin-<name>.pem); it is recorded as the author of a change.") var name = "ops"

    /// Sends one directory request and waits (10 s at most) for its answer.
    func send(_ request: Allot_V1_DirectoryRequest) async throws -> Allot_V1_DirectoryResponse {
        guard let colon = coordinator.lastIndex(of: ":"), let port = Int(coordinator[coordinator.index(after: colon)...]) else {
            throw ValidationError("--coordinator must be HOST:PORT (got '\(coordinator)')")
        }
        let dir = URL(fileURLWithPath: tlsDir), adminName = name
        let tls = try TLSMaterialStore { try TLSMaterial.load(dir: dir, role: .admin, name: adminName) }
        let transport = TLSLeaseTransport(host: String(coordinator[..<colon]), port: port, tls: tls, group: MultiThreadedEventLoopGroup.singleton)
        let result = OneShot<Allot_V1_DirectoryResponse>()
        var req = request
        req.requestID = 1
        var frame = Allot_V1_Frame()
        frame.directoryRequest = req
        let outgoing = frame
        let answer = try await withCheckedThrowingContinuation { continuation in
            result.set(continuation)
            Task {
                do {
                    let conn = try await transport.connect(onFrame: { f in
                        switch f.body {
                        case .directoryResponse(let r) where r.requestID == 1: result.resume(.success(r))
                        case .error(let e): result.resume(.failure(ValidationError("coordinator refused: \(e.message)")))
                        default: break
                        }
                    }, onClose: { result.resume(.failure(ValidationError("the coordinator closed the connection"))) })
                    conn.send([.hello(name: adminName), outgoing])
                    try await Task.sleep(for: .seconds(10))
                    result.resume(.failure(ValidationError("no answer from the coordinator within 10 s")))
                    conn.close()
                } catch {
                    result.resume(.failure(ValidationError("cannot reach the coordinator: \(error)")))
                }
            }
        }
        guard answer.error.isEmpty else { throw ValidationError(answer.error) }
        return answer
    }

    /// Applies `change`; returns the answer (the new version and its summary).
    func change(_ change: Directory.Change) async throws -> Allot_V1_DirectoryResponse {
        var r = Allot_V1_DirectoryRequest()
        r.change = Directory.encode(change)
        return try await send(r)
    }

    /// The newest `last` versions (1 to 1,000) of the directory, or of the policy (`config`).
    func history(config: Bool = false, last: Int) async throws -> [Allot_V1_DirectoryVersion] {
        var r = Allot_V1_DirectoryRequest()
        (r.config, r.history) = (config, UInt32(clamping: max(1, min(last, 1_000))))
        return try await send(r).history
    }

    func directory() async throws -> (version: UInt64, directory: Directory) {
        let answer = try await send(Allot_V1_DirectoryRequest())
        return (answer.version, answer.document.isEmpty ? Directory() : try Directory(decoding: answer.document))
    }
}

extension Allot_V1_DirectoryResponse {
    /// A change's answer as the commands print it.
    var changed: String { "directory version \(version): \(summary)" }
}

/// `allot keys`: API keys in the consumer directory (kept in the ledger, sent to gateways).
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, revoke and list API keys in the consumer directory (the ledger's; every gateway gets it within a second).",
        subcommands: [Create.self, Revoke.self, List.self, History.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a key for a consumer and print it once (only its hash is stored).")
        @OptionGroup var target: AdminTarget
        @Option(help: "The consumer the key belongs to.") var consumer: String
        @Option(help: "The consumer's tier (creates the consumer, or moves it to this tier).") var tier: String?
        @Option(help: "Refuse the key after this long (e.g. 30d, 12h); never by default.") var expires: String?

        func run() async throws {
            let (key, hash) = Directory.newKey()
            let now = WallClock.now()
            let until = try expires.map { now + (try ConfigFields.duration($0, field: "--expires")) }
            let answer = try await target.change(.createKey(Directory.KeyRecord(consumer: consumer, keySHA256: hash, created: now, expires: until), tier: tier))
            print(key)
            FileHandle.standardError.write(Data("key id \(hash.prefix(12)) for \(consumer): directory version \(answer.version) (\(answer.summary)); the key is not shown again\n".utf8))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its id (every gateway refuses it within a second).")
        @OptionGroup var target: AdminTarget
        @Argument(help: "The key id (allot keys list).") var keyID: String

        func run() async throws {
            let answer = try await target.change(.revokeKey(keyID: keyID))
            print(answer.changed)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List key ids (never keys), with consumer, tier and expiry.")
        @OptionGroup var target: AdminTarget
        @Option(help: "Only this consumer's keys.") var consumer: String?

        func run() async throws {
            let (version, d) = try await target.directory()
            let tiers = Dictionary(d.consumers.map { ($0.id, $0.tier) }) { a, _ in a }
            print("directory version \(version)")
            for k in d.keys where consumer == nil || k.consumer == consumer {
                let expiry = k.expires_unix_ns.map { "expires \(Instant(nanoseconds: $0))" } ?? "no expiry"
                print("\(k.key_id)  \(k.consumer)  \(tiers[k.consumer] ?? "-")  created \(Instant(nanoseconds: k.created_unix_ns))  \(expiry)")
            }
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The directory's versions, newest first: author, time, what changed.")
        @OptionGroup var target: AdminTarget
        @Option(help: "How many versions.") var last = 20

        func run() async throws {
            for v in try await target.history(last: last) {
                print("\(v.version)  \(Instant(nanoseconds: v.createdUnixNs))  \(v.author)  \(v.change)")
            }
        }
    }
}

/// `allot consumers`: consumers in the directory.
struct Consumers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, delete and list consumers in the consumer directory (the ledger's).",
        subcommands: [Set_.self, Delete.self, List.self])

    struct Set_: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Add a consumer or change it (tier, team, tenant, max chain depth).")
        @OptionGroup var target: AdminTarget
        @Option(help: "The consumer's id.") var id: String
        @Option(help: "Its tier.") var tier: String
        @Option var team: String?
        @Option var tenant: String?
        @Option(help: "Overrides the tier's max_chain_depth.") var maxChainDepth: Int?

        func run() async throws {
            let c = Directory.ConsumerRecord(id: id, tier: tier, team: team, tenant: tenant, maxChainDepth: maxChainDepth)
            let answer = try await target.change(.setConsumer(c))
            print(answer.changed)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a consumer and every key of it.")
        @OptionGroup var target: AdminTarget
        @Option(help: "The consumer's id.") var id: String

        func run() async throws {
            let answer = try await target.change(.deleteConsumer(id: id))
            print(answer.changed)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the consumers, with their number of keys.")
        @OptionGroup var target: AdminTarget

        func run() async throws {
            let (version, d) = try await target.directory()
            print("directory version \(version)")
            for c in d.consumers {
                let keys = d.keys.filter { $0.consumer == c.id }.count
                print("\(c.id)  tier \(c.tier)  team \(c.team ?? "-")  tenant \(c.tenant ?? "-")  \(keys) key\(keys == 1 ? "" : "s")")
            }
        }
    }
}
