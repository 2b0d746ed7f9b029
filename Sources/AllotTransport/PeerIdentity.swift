import AllotCore

/// Who is on the other end of a connection, as its certificate says: a SPIFFE-style URI SAN
/// `spiffe://<trust-domain>/<role>/<name>`. Never taken from what a peer claims in a message.
public struct PeerIdentity: Hashable, Sendable, CustomStringConvertible {
    public enum Role: String, CaseIterable, Hashable, Sendable {
        /// Serves leases, gossips with other coordinators.
        case coordinator
        /// A gateway node: may acquire and release leases, nothing else.
        case node
        /// An operator's tool (`allot status`): may read state.
        case admin
    }

    public var trustDomain: String
    public var role: Role
    public var name: String

    public init(trustDomain: String, role: Role, name: String) throws(TransportError) {
        guard Self.isValidSegment(trustDomain, allowDots: true) else {
            throw TransportError(.badIdentity, "trust domain '\(trustDomain)' must be letters, digits, '-', '_' and '.'")
        }
        guard Self.isValidSegment(name, allowDots: true) else {
            throw TransportError(.badIdentity, "name '\(name)' must be letters, digits, '-', '_' and '.'")
        }
        self.trustDomain = trustDomain
        self.role = role
        self.name = name
    }

    /// Parses `spiffe://domain/role/name`.
    public init(uri: String) throws(TransportError) {
        let prefix = "spiffe://"
        guard uri.hasPrefix(prefix) else {
            throw TransportError(.badIdentity, "'\(uri)' is not a spiffe:// URI")
        }
        let parts = uri.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, let role = Role(rawValue: String(parts[1])) else {
            throw TransportError(.badIdentity, "'\(uri)' is not spiffe://<trust-domain>/<coordinator|node|admin>/<name>")
        }
        try self.init(trustDomain: String(parts[0]), role: role, name: String(parts[2]))
    }

    public var uri: String { "spiffe://\(trustDomain)/\(role.rawValue)/\(name)" }
    public var description: String { uri }

    private static func isValidSegment(_ s: String, allowDots: Bool) -> Bool {
        !s.isEmpty && s.count <= 128 && s.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                || $0 == "-" || $0 == "_" || (allowDots && $0 == ".")
        }
    }
}

/// Why a peer, a certificate or a link was refused. Stable codes; the message says what to do.
public typealias TransportError = CodedError<TransportErrorCode>

public enum TransportErrorCode: String, ErrorCode {
    case badIdentity = "bad_identity"
    case wrongTrustDomain = "wrong_trust_domain"
    case wrongRole = "wrong_role"
    case noPeerCertificate = "no_peer_certificate"
    case certificateFiles = "certificate_files"
    case certificateInvalid = "certificate_invalid"
    case linkCut = "link_cut"
    /// The certificate's SPIFFE ID or serial number is on the deny list.
    case denied = "denied"
}
