import Crypto
import Foundation
import SwiftASN1
import X509

/// The cluster's certificate authority: a directory holding the CA and the leaves it issued.
///
/// Layout of `dir`: `ca.pem`, `ca-key.pem` (0600), `trust-domain`, and per identity
/// `<role>-<name>.pem` and `<role>-<name>-key.pem` (0600). ECDSA P-256 throughout.
public struct CertificateAuthority: Sendable {
    public let directory: URL
    public let trustDomain: String
    private let certificate: Certificate
    private let key: P256.Signing.PrivateKey

    /// Creates a new CA in `dir` (refuses to overwrite an existing one).
    public static func create(in dir: URL, trustDomain: String, validFor days: Int = 3650, now: Date = Date()) throws -> CertificateAuthority {
        _ = try PeerIdentity(trustDomain: trustDomain, role: .admin, name: "check")
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        guard !fm.fileExists(atPath: dir.appendingPathComponent("ca.pem").path) else {
            throw TransportError(.certificateFiles, "\(dir.path) already holds a CA (ca.pem); use another directory or remove it")
        }
        let key = P256.Signing.PrivateKey()
        // A name of its own (from its key): during a CA rotation the old and the new CA sit side
        // by side in ca.pem, and TLS finds a certificate's issuer by name.
        let keyID = SHA256.hash(data: key.publicKey.derRepresentation).prefix(4).map { String(format: "%02x", $0) }.joined()
        let name = try DistinguishedName {
            OrganizationName("Allot")
            CommonName("Allot CA \(trustDomain) \(keyID)")
        }
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        try Self.write(try cert.serializeAsPEM().pemString, to: dir.appendingPathComponent("ca.pem"), secret: false)
        try Self.write(key.pemRepresentation, to: dir.appendingPathComponent("ca-key.pem"), secret: true)
        try Self.write(trustDomain + "\n", to: dir.appendingPathComponent("trust-domain"), secret: false)
        return CertificateAuthority(directory: dir, trustDomain: trustDomain, certificate: cert, key: key)
    }

    /// Opens the CA in `dir` for issuing.
    public static func open(_ dir: URL) throws -> CertificateAuthority {
        do {
            let pem = try String(contentsOf: dir.appendingPathComponent("ca.pem"), encoding: .utf8)
            let keyPEM = try String(contentsOf: dir.appendingPathComponent("ca-key.pem"), encoding: .utf8)
            let domain = try String(contentsOf: dir.appendingPathComponent("trust-domain"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            return CertificateAuthority(directory: dir, trustDomain: domain, certificate: try Certificate(pemEncoded: pem),
                                        key: try P256.Signing.PrivateKey(pemRepresentation: keyPEM))
        } catch let e as TransportError {
            throw e
        } catch {
            throw TransportError(.certificateFiles, "cannot open the CA in \(dir.path) (ca.pem, ca-key.pem, trust-domain): \(error); create one with `allot certs init --dir \(dir.path)`")
        }
    }

    /// Issues a leaf for `role`/`name`, valid for `days`, with optional extra DNS names and IP
    /// addresses, and writes it to `<role>-<name>.pem` and `<role>-<name>-key.pem` (0600).
    @discardableResult
    public func issue(role: PeerIdentity.Role, name: String, dnsNames: [String] = [], ipAddresses: [String] = [],
                      validFor days: Int = 365, now: Date = Date(), notBefore: Date? = nil) throws -> (certificate: URL, key: URL) {
        let id = try PeerIdentity(trustDomain: trustDomain, role: role, name: name)
        let key = P256.Signing.PrivateKey()
        var sans: [GeneralName] = [.uniformResourceIdentifier(id.uri)]
        sans += dnsNames.map { .dnsName($0) }
        for ip in ipAddresses {
            guard let bytes = Self.ipBytes(ip) else {
                throw TransportError(.badIdentity, "'\(ip)' is not an IPv4 address or ::1")
            }
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        }
        let start = notBefore ?? now.addingTimeInterval(-300)
        let cert = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: start, notValidAfter: start.addingTimeInterval(Double(days) * 86_400 + 300),
            issuer: certificate.subject,
            subject: try DistinguishedName {
                OrganizationName("Allot")
                CommonName("\(role.rawValue) \(name)")
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(sans)
            },
            issuerPrivateKey: .init(self.key))
        let certURL = directory.appendingPathComponent("\(role.rawValue)-\(name).pem")
        let keyURL = directory.appendingPathComponent("\(role.rawValue)-\(name)-key.pem")
        try Self.write(try cert.serializeAsPEM().pemString, to: certURL, secret: false)
        try Self.write(key.pemRepresentation, to: keyURL, secret: true)
        return (certURL, keyURL)
    }

    private init(directory: URL, trustDomain: String, certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.directory = directory
        self.trustDomain = trustDomain
        self.certificate = certificate
        self.key = key
    }

    /// Writes atomically; secrets are created 0600 before any byte is written.
    static func write(_ text: String, to url: URL, secret: Bool) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        let fm = FileManager.default
        _ = fm.createFile(atPath: tmp.path, contents: nil, attributes: [.posixPermissions: secret ? 0o600 : 0o644])
        let handle = try FileHandle(forWritingTo: tmp)
        try handle.write(contentsOf: Data(text.utf8))
        try handle.close()
        if fm.fileExists(atPath: url.path) { try fm.removeItem(at: url) }
        try fm.moveItem(at: tmp, to: url)
    }

    static func ipBytes(_ s: String) -> [UInt8]? {
        if s == "::1" { return Array(repeating: 0, count: 15) + [1] }
        let parts = s.split(separator: ".")
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard let v = UInt8(p) else { return nil }
            out.append(v)
        }
        return out
    }
}
