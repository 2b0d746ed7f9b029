import Foundation
import NIOCore
import NIOSSL
import Synchronization
import X509

/// The certificates one process presents and trusts, turned into TLS 1.3-only, mutually
/// authenticated contexts. Trust is the cluster CA only (never the system store).
public struct TLSMaterial: Sendable {
    public let identity: PeerIdentity
    public let serverContext: NIOSSLContext
    public let clientContext: NIOSSLContext

    /// Loads `<dir>/ca.pem`, `<dir>/trust-domain` and this identity's certificate and key.
    /// `trustDomain` overrides the directory's `trust-domain` file (it must match the certificates).
    public static func load(dir: URL, role: PeerIdentity.Role, name: String, trustDomain: String? = nil) throws -> TLSMaterial {
        let files = (ca: dir.appendingPathComponent("ca.pem"),
                     cert: dir.appendingPathComponent("\(role.rawValue)-\(name).pem"),
                     key: dir.appendingPathComponent("\(role.rawValue)-\(name)-key.pem"),
                     domain: dir.appendingPathComponent("trust-domain"))
        let caPEM: String, certPEM: String, keyPEM: String, domain: String
        do {
            caPEM = try String(contentsOf: files.ca, encoding: .utf8)
            certPEM = try String(contentsOf: files.cert, encoding: .utf8)
            keyPEM = try String(contentsOf: files.key, encoding: .utf8)
            domain = try trustDomain ?? String(contentsOf: files.domain, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            throw TransportError(.certificateFiles, "cannot read the TLS files for \(role.rawValue) \(name) in \(dir.path) (ca.pem, \(files.cert.lastPathComponent), \(files.key.lastPathComponent), trust-domain): issue them with `allot certs issue --dir \(dir.path) --role \(role.rawValue) --name \(name)`")
        }
        let identity = try PeerIdentity(trustDomain: domain, role: role, name: name)
        let own = try Certificate(pemEncoded: certPEM)
        guard try PeerVerifier.identities(of: own).contains(identity) else {
            throw TransportError(.certificateInvalid, "\(files.cert.lastPathComponent) does not carry \(identity.uri)")
        }
        let ca = try NIOSSLCertificate(bytes: Array(caPEM.utf8), format: .pem)
        let chain = try NIOSSLCertificate(bytes: Array(certPEM.utf8), format: .pem)
        let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)

        var server = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: [.certificate(chain)], privateKey: .privateKey(key), trustRoots: .certificates([ca]))
        server.minimumTLSVersion = .tlsv13
        server.maximumTLSVersion = .tlsv13
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = [.certificate(chain)]
        client.privateKey = .privateKey(key)
        client.trustRoots = .certificates([ca])
        // The server's name is checked as a SPIFFE identity after the handshake.
        client.certificateVerification = .noHostnameVerification
        client.minimumTLSVersion = .tlsv13
        client.maximumTLSVersion = .tlsv13
        return TLSMaterial(identity: identity,
                           serverContext: try NIOSSLContext(configuration: server),
                           clientContext: try NIOSSLContext(configuration: client))
    }
}

/// The current TLS material, replaceable without a restart: new connections use the new
/// certificates, existing connections (and their leases) carry on.
public final class TLSMaterialStore: Sendable {
    private let state: Mutex<TLSMaterial>
    private let source: @Sendable () throws -> TLSMaterial

    public init(_ source: @escaping @Sendable () throws -> TLSMaterial) throws {
        self.source = source
        state = Mutex(try source())
    }

    public var current: TLSMaterial { state.withLock { $0 } }

    /// Reloads from the files; on error the old material stays in use and the error is thrown.
    public func reload() throws {
        let fresh = try source()
        state.withLock { $0 = fresh }
    }
}

/// Checks a peer's certificate after the handshake (which already proved it chains to the
/// cluster CA and is within its validity period).
public enum PeerVerifier {
    /// The SPIFFE identities in a certificate's URI SANs.
    public static func identities(of cert: Certificate) throws -> [PeerIdentity] {
        guard let sans = try cert.extensions.subjectAlternativeNames else { return [] }
        var out: [PeerIdentity] = []
        for case .uniformResourceIdentifier(let uri) in sans {
            if let id = try? PeerIdentity(uri: uri) { out.append(id) }
        }
        return out
    }

    /// The peer's identity, if it is in `trustDomain` with one of `roles`.
    public static func verify(_ peer: NIOSSLCertificate?, trustDomain: String, roles: Set<PeerIdentity.Role>) throws(TransportError) -> PeerIdentity {
        guard let peer else { throw TransportError(.noPeerCertificate, "the peer presented no certificate") }
        let ids: [PeerIdentity]
        do {
            ids = try identities(of: try Certificate(derEncoded: try peer.toDERBytes()))
        } catch {
            throw TransportError(.certificateInvalid, "the peer certificate cannot be read: \(error)")
        }
        guard let id = ids.first else {
            throw TransportError(.badIdentity, "the peer certificate has no spiffe:// URI SAN")
        }
        guard id.trustDomain == trustDomain else {
            throw TransportError(.wrongTrustDomain, "\(id.uri) is not in trust domain \(trustDomain)")
        }
        guard roles.contains(id.role) else {
            let allowed = roles.map(\.rawValue).sorted().joined(separator: ", ")
            throw TransportError(.wrongRole, "\(id.uri) has role \(id.role.rawValue); this endpoint accepts \(allowed)")
        }
        return id
    }

    /// A short reason for a failed handshake, for logs and the
    /// `allot_handshake_failures_total{reason}` metric.
    public static func handshakeFailureReason(_ error: any Error) -> String {
        let text = String(describing: error).uppercased()
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTP_REQUEST") || text.contains("PACKET_LENGTH") { return "not_tls" }
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") { return "no_client_certificate" }
        if text.contains("CERTIFICATE_EXPIRED") || text.contains("CERTIFICATE_HAS_EXPIRED") { return "certificate_expired" }
        if text.contains("UNKNOWN_CA") || text.contains("CERTIFICATE_VERIFY_FAILED") { return "untrusted_certificate" }
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("PROTOCOL_VERSION") { return "tls_version" }
        if text.contains("EOF") || text.contains("UNCLEAN") { return "closed_during_handshake" }
        return "other"
    }
}
