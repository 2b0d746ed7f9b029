import AllotGateway
import AllotCore
import Foundation

/// The demo's HTML report: the summary table, and per consumer a chart of requests admitted
/// per second (fleet-wide and per node) against the requests-per-minute cap. Inline SVG, no
/// scripts, no external files.
enum DemoReport {
    static func html(result: DemoRunner.Result, events: [GatewayEvent], nodes: [String], start: Instant, seconds: Int,
                     config: GatewayConfig) throws -> String {
        let catalog = try config.catalog
        var charts = ""
        for a in DemoScript.actors {
            let admits = events.filter { $0.kind == .admit && $0.consumer == a.id }
            var perNode: [String: [Int]] = [:]
            var fleet = Array(repeating: 0, count: max(1, seconds))
            for e in admits {
                let s = Int((e.time - start).nanoseconds / 1_000_000_000)
                guard s >= 0 && s < fleet.count else { continue }
                fleet[s] += 1
                perNode[e.node, default: Array(repeating: 0, count: fleet.count)][s] += 1
            }
            let consumer = Consumer(id: a.id, team: a.team, tenant: "demo", tier: a.tier)
            let rpm = try catalog.budgets(for: consumer).first { $0.unit == .requests && $0.kind.name == "rate" }
            var capPerSecond: Double?
            if case .rate(let limit, let period, _)? = rpm?.kind { capPerSecond = Double(limit) / period.secondsDouble }
            charts += chart(title: "\(a.id) (\(a.tier)): admitted per second", fleet: fleet, perNode: nodes.map { perNode[$0] ?? [] },
                            nodes: nodes, cap: capPerSecond)
        }
        var rows = ""
        for r in result.rows {
            rows += "<tr><td>\(r.consumer)</td><td><code>\(escape(r.budget))</code></td><td>\(escape(r.cap))</td><td>\(r.admitted)</td><td>\(r.denied)</td><td class=\"\(r.overshoot == 0 ? "ok" : "bad")\">\(r.overshoot)</td></tr>\n"
        }
        return """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>allot demo report</title>
        <style>
        body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
        table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
        .ok{color:#070}.bad{color:#b00;font-weight:bold}figure{display:inline-block;margin:8px}svg{background:#fafafa;border:1px solid #ddd}
        </style></head><body>
        <h1>allot demo</h1>
        <p>\(nodes.count) gateway nodes, one coordinator over mutual TLS, mock upstream; \(seconds) s.
        Requests \(result.requests), admitted \(result.admitted), coordinator messages per 1,000 requests
        \(String(format: "%.1f", result.messagesPer1k)). Runaway flagged: \(result.runawayFlagged.isEmpty ? "none" : result.runawayFlagged.joined(separator: ", ")).
        Total overshoot: <b class="\(result.totalOvershoot == 0 ? "ok" : "bad")">\(result.totalOvershoot)</b>.</p>
        <h2>Budgets</h2>
        <table><tr><th>consumer</th><th>budget</th><th>cap</th><th>admitted (units)</th><th>denied by it</th><th>overshoot</th></tr>
        \(rows)</table>
        <p>Overshoot is checked fleet-wide from the gateways' own timestamps: for rate budgets, every interval's
        admitted units (charged what they finally cost) against burst + rate × interval; for quotas, the total;
        for concurrency, the most requests in flight at once.</p>
        <h2>Admitted per second against the cap</h2>
        \(charts)
        </body></html>
        """
    }

    static let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]

    static func chart(title: String, fleet: [Int], perNode: [[Int]], nodes: [String], cap: Double?) -> String {
        let w = 480.0, h = 200.0, left = 36.0, bottom = 24.0
        let top = max(Double(fleet.max() ?? 1), cap ?? 0, 1) * 1.15
        func x(_ i: Int) -> Double { left + (w - left - 8) * Double(i) / Double(max(1, fleet.count - 1)) }
        func y(_ v: Double) -> Double { h - bottom - (h - bottom - 8) * v / top }
        func line(_ values: [Int], _ color: String, _ width: Double) -> String {
            let pts = values.enumerated().map { String(format: "%.1f,%.1f", x($0.offset), y(Double($0.element))) }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(width)\" points=\"\(pts)\"/>"
        }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        svg += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - 8)\" y2=\"\(h - bottom)\" stroke=\"#999\"/>"
        svg += "<text x=\"2\" y=\"\(y(top / 1.15) + 4)\" font-size=\"10\">\(Int(top / 1.15))</text><text x=\"2\" y=\"\(h - bottom)\" font-size=\"10\">0</text>"
        svg += "<text x=\"\(w - 60)\" y=\"\(h - 6)\" font-size=\"10\">seconds →</text>"
        for (i, n) in perNode.enumerated() where !n.isEmpty { svg += line(n, colors[i % colors.count], 1) }
        svg += line(fleet, "#000", 2.5)
        if let cap {
            svg += "<line x1=\"\(left)\" y1=\"\(y(cap))\" x2=\"\(w - 8)\" y2=\"\(y(cap))\" stroke=\"#d62728\" stroke-dasharray=\"6,4\" stroke-width=\"1.5\"/>"
            svg += "<text x=\"\(left + 4)\" y=\"\(y(cap) - 4)\" font-size=\"10\" fill=\"#d62728\">cap \(String(format: "%.1f", cap))/s</text>"
        }
        svg += "</svg>"
        let legend = ["<span style=\"color:#000\">■ fleet</span>"] + nodes.enumerated().map { "<span style=\"color:\(colors[$0.offset % colors.count])\">■ \($0.element)</span>" }
        return "<figure><figcaption>\(escape(title))</figcaption>\(svg)<div style=\"font-size:12px\">\(legend.joined(separator: " "))</div></figure>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
