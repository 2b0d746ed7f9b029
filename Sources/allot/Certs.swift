import AllotTransport
import ArgumentParser
import Foundation

struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Create the cluster CA and issue certificates (ECDSA P-256; keys written 0600).",
        subcommands: [Init.self, Issue.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a CA in a directory.")
        @Option(help: "Directory for the CA and the certificates it issues.") var dir: String
        @Option(help: "SPIFFE trust domain.") var trustDomain = "allot.local"
        @Option(help: "Validity in days.") var days = 3650

        func run() throws {
            let ca = try CertificateAuthority.create(in: URL(fileURLWithPath: dir), trustDomain: trustDomain, validFor: days)
            print("created CA for spiffe://\(ca.trustDomain) in \(dir) (ca.pem, ca-key.pem)")
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a certificate for a coordinator, node or admin.")
        @Option(help: "The CA's directory.") var dir: String
        @Option(help: "coordinator, node or admin.") var role: String
        @Option(help: "The peer's name (letters, digits, '-', '_', '.').") var name: String
        @Option(help: "Extra DNS names (repeatable).") var dns: [String] = []
        @Option(help: "Extra IP addresses (repeatable).") var ip: [String] = []
        @Option(help: "Validity in days.") var days = 365

        func run() throws {
            guard let r = PeerIdentity.Role(rawValue: role) else {
                throw ValidationError("--role must be coordinator, node or admin (got '\(role)')")
            }
            let ca = try CertificateAuthority.open(URL(fileURLWithPath: dir))
            let (cert, key) = try ca.issue(role: r, name: name, dnsNames: dns, ipAddresses: ip, validFor: days)
            print("issued spiffe://\(ca.trustDomain)/\(role)/\(name): \(cert.lastPathComponent), \(key.lastPathComponent)")
        }
    }
}
