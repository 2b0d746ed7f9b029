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
    /// The same, as configurations (for HTTPS listeners and clients: the admin API).
    public let serverConfiguration: TLSConfiguration
    public let clientConfiguration: TLSConfiguration
    /// Identities refused even with a valid certificate (`<dir>/deny-list`).
    public let denyList: DenyList

    /// Loads `<dir>/ca.pem` (every CA in it is trusted: put the new one beside the old while
    /// rotating), `<dir>/trust-domain`, `<dir>/deny-list` (optional) and this identity's
    /// certificate and key.
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
        let cas = try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8))
        guard !cas.isEmpty else { throw TransportError(.certificateFiles, "\(files.ca.path) holds no certificate") }
        let denyList = try DenyList.load(dir.appendingPathComponent("deny-list"))
        let chain = try NIOSSLCertificate(bytes: Array(certPEM.utf8), format: .pem)
        let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)

        var server = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: [.certificate(chain)], privateKey: .privateKey(key), trustRoots: .certificates(cas))
        server.minimumTLSVersion = .tlsv13
        server.maximumTLSVersion = .tlsv13
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = [.certificate(chain)]
        client.privateKey = .privateKey(key)
        client.trustRoots = .certificates(cas)
        // The server's name is checked as a SPIFFE identity after the handshake.
        client.certificateVerification = .noHostnameVerification
        client.minimumTLSVersion = .tlsv13
        client.maximumTLSVersion = .tlsv13
        return TLSMaterial(identity: identity,
                           serverContext: try NIOSSLContext(configuration: server),
                           clientContext: try NIOSSLContext(configuration: client),
                           serverConfiguration: server, clientConfiguration: client, denyList: denyList)
    }
}

/// SPIFFE IDs and certificate serial numbers (hex, as `allot certs` prints them) that are
/// refused at the handshake's end whatever their certificate says: one per line in
/// `<dir>/deny-list`, `#` starts a comment. Reloaded with the certificates (SIGHUP).
public struct DenyList: Sendable, Equatable {
    public var identities: Set<String> = []
    public var serials: Set<String> = []

    public init(identities: Set<String> = [], serials: Set<String> = []) {
        self.identities = identities
        self.serials = serials
    }

    public static func load(_ file: URL) throws -> DenyList {
        guard FileManager.default.fileExists(atPath: file.path) else { return DenyList() }
        guard let text = try? String(contentsOf: file, encoding: .utf8) else {
            throw TransportError(.certificateFiles, "cannot read \(file.path)")
        }
        var list = DenyList()
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first?
                .trimmingCharacters(in: .whitespaces) ?? ""
            if line.isEmpty { continue }
            if line.hasPrefix("spiffe://") {
                _ = try PeerIdentity(uri: line)
                list.identities.insert(line)
            } else if let serial = Self.serial(line.hasPrefix("serial=") ? String(line.dropFirst(7)) : line) { // openssl x509 -serial
                list.serials.insert(serial)
            } else {
                throw TransportError(.certificateFiles, "\(file.path):\(i + 1): '\(line)' is neither a spiffe:// ID nor a hex serial number")
            }
        }
        return list
    }

    /// A serial number in canonical form: lower-case hex, no separators or leading zeros.
    static func serial(_ text: some StringProtocol) -> String? {
        let hex = text.lowercased().filter { $0 != ":" }
        guard !hex.isEmpty, hex.allSatisfy(\.isHexDigit) else { return nil }
        let trimmed = hex.drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }

    public static func serial(of cert: Certificate) -> String {
        serial(cert.serialNumber.bytes.map { String($0, radix: 16).leftPadded(2) }.joined()) ?? "0"
    }

    /// The serial number of the certificate in a PEM file, as the deny list takes it.
    public static func serial(pemFile: URL) throws -> String {
        serial(of: try Certificate(pemEncoded: String(contentsOf: pemFile, encoding: .utf8)))
    }

    /// Whether a connection already open for `identity` with certificate `serial` is now denied.
    public func denies(_ identity: PeerIdentity, serial: String) -> Bool {
        identities.contains(identity.uri) || serials.contains(serial)
    }

    /// Why `cert` is refused, or nil.
    public func refusal(_ cert: Certificate, identity: PeerIdentity) -> String? {
        if identities.contains(identity.uri) { return "\(identity.uri) is on the deny list" }
        let serial = Self.serial(of: cert)
        if serials.contains(serial) { return "certificate serial \(serial) of \(identity.uri) is on the deny list" }
        return nil
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
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

    /// The peer's identity, if it is in `trustDomain` with one of `roles` and not denied.
    public static func verify(_ peer: NIOSSLCertificate?, trustDomain: String, roles: Set<PeerIdentity.Role>,
                              denyList: DenyList = DenyList()) throws(TransportError) -> PeerIdentity {
        try inspect(peer, trustDomain: trustDomain, roles: roles, denyList: denyList).identity
    }

    /// The peer's identity and when its certificate expires (a connection must not outlive it).
    public static func inspect(_ peer: NIOSSLCertificate?, trustDomain: String, roles: Set<PeerIdentity.Role>,
                               denyList: DenyList = DenyList()) throws(TransportError) -> (identity: PeerIdentity, notValidAfter: Date, serial: String) {
        guard let peer else { throw TransportError(.noPeerCertificate, "the peer presented no certificate") }
        let ids: [PeerIdentity]
        let cert: Certificate
        do {
            cert = try Certificate(derEncoded: try peer.toDERBytes())
            ids = try identities(of: cert)
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
        if let why = denyList.refusal(cert, identity: id) { throw TransportError(.denied, why) }
        return (id, cert.notValidAfter, DenyList.serial(of: cert))
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
