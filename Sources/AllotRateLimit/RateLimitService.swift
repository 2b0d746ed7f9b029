import AllotCore
import AllotNode
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import SwiftProtobuf

/// `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over `RateLimitCore`.
public struct RateLimitGRPCService: Envoy_Service_Ratelimit_V3_RateLimitService.SimpleServiceProtocol {
    public let core: RateLimitCore
    public init(core: RateLimitCore) { self.core = core }

    public func shouldRateLimit(request: Envoy_Service_Ratelimit_V3_RateLimitRequest,
                                context: ServerContext) async throws -> Envoy_Service_Ratelimit_V3_RateLimitResponse {
        guard !request.domain.isEmpty else { throw RPCError(code: .invalidArgument, message: "rate limit domain must not be empty") }
        guard !request.descriptors.isEmpty else { throw RPCError(code: .invalidArgument, message: "rate limit descriptor list must not be empty") }
        let descriptors = request.descriptors.map { d in
            RateLimitCore.Descriptor(entries: d.entries.map { ($0.key, $0.value) }, override: Self.override(d))
        }
        let answer = await core.decide(domain: request.domain, descriptors: descriptors, hits: request.hitsAddend)
        return Self.response(answer, headers: core.settings.responseHeaders)
    }

    static func override(_ d: Envoy_Extensions_Common_Ratelimit_V3_RateLimitDescriptor) -> DescriptorRules.Limit? {
        guard d.hasLimit, let unit = unit(d.limit.unit.rawValue) else { return nil }
        return DescriptorRules.Limit(requestsPerUnit: Int64(d.limit.requestsPerUnit), unit: unit)
    }

    /// The wire's unit numbers, in both enums: SECOND = 1 … YEAR = 6, and WEEK = 7 (added
    /// upstream after the files vendored here; read and written as its number).
    static let wireUnits: [DescriptorRules.TimeUnit] = [.second, .minute, .hour, .day, .month, .year, .week]
    static func unit(_ raw: Int) -> DescriptorRules.TimeUnit? {
        (1...wireUnits.count).contains(raw) ? wireUnits[raw - 1] : nil
    }

    static func response(_ a: RateLimitCore.Answer, headers: Bool = true) -> Envoy_Service_Ratelimit_V3_RateLimitResponse {
        var r = Envoy_Service_Ratelimit_V3_RateLimitResponse()
        r.overallCode = a.overLimit ? .overLimit : .ok
        r.statuses = a.statuses.map { s in
            var st = Envoy_Service_Ratelimit_V3_RateLimitResponse.DescriptorStatus()
            st.code = s.overLimit ? .overLimit : .ok
            if let l = s.limit {
                var cl = Envoy_Service_Ratelimit_V3_RateLimitResponse.RateLimit()
                cl.requestsPerUnit = UInt32(clamping: l.requestsPerUnit)
                cl.unit = .init(rawValue: (wireUnits.firstIndex(of: l.unit) ?? -1) + 1) ?? .unknown
                if let n = l.name { cl.name = n }
                st.currentLimit = cl
                st.limitRemaining = UInt32(clamping: s.remaining)
                var d = Google_Protobuf_Duration()
                let ns = s.untilReset.nanoseconds
                (d.seconds, d.nanos) = (ns / 1_000_000_000, Int32(ns % 1_000_000_000))
                st.durationUntilReset = d
            }
            return st
        }
        // The draft-03 headers Envoy's filter adds itself with enable_x_ratelimit_headers,
        // from the descriptor with the least left (so a proxy without that setting gets them).
        if headers, let tight = a.statuses.filter({ $0.limit != nil }).min(by: { $0.remaining < $1.remaining }), let l = tight.limit {
            let window = l.unit.duration.components.seconds
            func header(_ k: String, _ v: String) -> Envoy_Config_Core_V3_HeaderValue {
                var h = Envoy_Config_Core_V3_HeaderValue()
                (h.key, h.value) = (k, v)
                return h
            }
            let reset = (tight.untilReset.nanoseconds + 999_999_999) / 1_000_000_000
            r.responseHeadersToAdd = [header("x-ratelimit-limit", "\(l.requestsPerUnit), \(l.requestsPerUnit);w=\(window)"),
                                      header("x-ratelimit-remaining", "\(tight.remaining)"),
                                      header("x-ratelimit-reset", "\(reset)")]
        }
        return r
    }
}

/// The gRPC listener (plaintext HTTP/2: it runs beside its proxy, on loopback or in its pod).
public struct RateLimitServer: Sendable {
    public let core: RateLimitCore
    let host: String
    let port: Int

    public init(core: RateLimitCore, host: String, port: Int) {
        (self.core, self.host, self.port) = (core, host, port)
    }

    /// Serves until the task is cancelled; `onListening` gets the bound port.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        try await Self.serve(RateLimitGRPCService(core: core), host: host, port: port, onListening: onListening)
    }

    /// Serves `service` (plaintext HTTP/2 on `host:port`) until the task is cancelled.
    public static func serve(_ service: any RegistrableRPCService, host: String, port: Int,
                             onListening: @escaping @Sendable (Int) -> Void) async throws {
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: host, port: port), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [service])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            if let ipv4 = try await transport.listeningAddress.ipv4 {
                onListening(ipv4.port)
            }
        }
    }
}
