import AllotConfig
import AllotCoordinator
@testable import AllotGateway
import Foundation
import Testing
import Yams

/// The Kubernetes examples (cluster/deploy/kubernetes/) as Allot reads them: their
/// configuration parses as a coordinator's and a gateway's; every replica runs under its pod's
/// own name (its own certificate); no shell and no curl (the image has neither: Dockerfile);
/// probes and metrics on a listener of their own; the ledger password from a Secret file; the
/// coordinators' member list is the StatefulSet's pods.
@Suite("Kubernetes examples")
struct DeployExamplesTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("cluster/deploy/kubernetes")

    static func documents(_ name: String) throws -> [[String: Any]] {
        let text = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
        return try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
    }

    static func value(_ o: Any?, _ path: String...) -> Any? {
        var cur = o
        for p in path { cur = (cur as? [String: Any])?[p] }
        return cur
    }

    @Test("coordinators and gateways: configuration parses, per-pod names and certificates, no shell or curl, httpGet probes on the metrics port, password from a file, members = the StatefulSet's pods")
    func examples() throws {
        let docs = try Self.documents("coordinators.yaml") + Self.documents("gateways.yaml")
        let config = try #require(docs.first { $0["kind"] as? String == "ConfigMap" }.flatMap { Self.value($0, "data", "allot.yaml") as? String })
        // The ledger's password is a file: the URL names it and holds none.
        #expect(config.contains("password_file=/etc/allot/ledger/password") && !config.contains("allot:"))
        let password = FileManager.default.temporaryDirectory.appendingPathComponent("allot-k8s-pw-\(UUID().uuidString.prefix(8))")
        try "s3cret\n".write(to: password, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: password) }
        let local = config.replacingOccurrences(of: "/etc/allot/ledger/password", with: password.path)
        let coordinator = try CoordinatorConfig(yaml: local)
        _ = try GatewayConfig(yaml: local)
        let sets = docs.filter { $0["kind"] as? String == "StatefulSet" }
        #expect(sets.count == 2, "coordinators and gateways are StatefulSets (stable per-pod names)")
        for set in sets {
            let name = try #require(Self.value(set, "metadata", "name") as? String)
            let spec = try #require(Self.value(set, "spec", "template", "spec") as? [String: Any])
            #expect(Self.value(spec, "securityContext", "runAsNonRoot") as? Bool == true, "\(name): non-root")
            for c in (spec["containers"] as? [[String: Any]]) ?? [] {
                let command = (c["command"] as? [String]) ?? []
                let text = "\(c)"
                #expect(command.first == "/allot", "\(name): the binary itself, no shell: \(command)")
                #expect(!text.contains("/bin/sh") && !text.contains("curl"), "\(name): no shell, no curl")
                // Its own name: the pod's, from the downward API.
                let i = try #require(command.firstIndex(of: "--name"))
                #expect(command[i + 1] == "$(POD_NAME)", "\(name): --name $(POD_NAME)")
                let env = (c["env"] as? [[String: Any]]) ?? []
                #expect(env.contains { $0["name"] as? String == "POD_NAME" && Self.value($0, "valueFrom", "fieldRef", "fieldPath") as? String == "metadata.name" })
                // Secrets in files; only the upstream's key (read from the environment) in one.
                let fromSecrets = env.filter { Self.value($0, "valueFrom", "secretKeyRef") != nil }.compactMap { $0["name"] as? String }
                #expect(fromSecrets.allSatisfy { $0 == "OPENAI_API_KEY" }, "\(name): \(fromSecrets)")
                #expect(Self.value(c, "securityContext", "allowPrivilegeEscalation") as? Bool == false
                        && (Self.value(c, "securityContext", "capabilities", "drop") as? [String]) == ["ALL"], "\(name): restricted")
                // Probes: HTTP from the kubelet, on the metrics listener.
                for probe in ["readinessProbe", "livenessProbe"] {
                    #expect(Self.value(c, probe, "httpGet", "port") as? String == "metrics", "\(name): \(probe)")
                }
                let ports = ((c["ports"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
                #expect(ports.contains("metrics"))
                if name == "allot-gateway" {
                    // The sidecar API stays on loopback; metrics and probes on their own port.
                    #expect(command.contains("--metrics") && command[command.firstIndex(of: "--admin")! + 1].hasPrefix("127.0.0.1:"))
                }
            }
        }
        // The coordinators' members: exactly the StatefulSet's pods, so the quorum is a majority of them.
        let coordinators = try #require(sets.first { Self.value($0, "metadata", "name") as? String == "allot-coordinator" })
        let replicas = try #require(Self.value(coordinators, "spec", "replicas") as? Int)
        let members = try #require(coordinator.cluster?.members)
        #expect(members == (0..<replicas).map { "allot-coordinator-\($0).allot-coordinator:7400" })
        #expect(coordinator.quorum == replicas / 2 + 1)
    }
}
