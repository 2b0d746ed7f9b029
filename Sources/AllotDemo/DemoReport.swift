import AllotGateway
import AllotCore
import Foundation

/// The demo's HTML report: the summary tables, and per consumer a chart of requests admitted
/// per second (fleet-wide and per node) against the requests-per-minute cap, and one of tokens
/// admitted per second by Allot and by post-paid counting against the tokens cap. Inline SVG,
/// no scripts, no external files.
enum DemoReport {
    /// Each admission of `consumer`, charged what it finally cost (its settle; the
    /// reservation when it never settled).
    static func admitted(_ events: [GatewayEvent], consumer: String) -> [(at: Instant, cost: Cost, node: String)] {
        var settles: [String: Cost] = [:]
        for e in events where e.kind == .settle && e.consumer == consumer { settles["\(e.node)#\(e.id)"] = e.cost }
        return events.filter { $0.kind == .admit && $0.consumer == consumer }
            .map { ($0.time, settles["\($0.node)#\($0.id)"] ?? $0.cost ?? Cost(), $0.node) }
    }

    static func html(result: DemoRunner.Result, events: [GatewayEvent], nodes: [String], start: Instant, seconds: Int,
                     config: GatewayConfig) throws -> String {
        let catalog = try config.catalog
        var charts = ""
        for a in DemoScript.actors {
            let admits = admitted(events, consumer: a.id)
            let fleet = DemoRunner.perSecond(admits.map { ($0.at, 1) }, start: start, seconds: seconds)
            let perNode = nodes.map { n in DemoRunner.perSecond(admits.filter { $0.node == n }.map { ($0.at, 1) }, start: start, seconds: seconds) }
            let consumer = Consumer(id: a.id, team: a.team, tenant: "demo", tier: a.tier)
            let rpm = try catalog.budgets(for: consumer).first { $0.unit == .requests && $0.kind.name == "rate" }
            var capPerSecond: Double?
            if case .rate(let limit, let period, _)? = rpm?.kind { capPerSecond = Double(limit) / period.secondsDouble }
            charts += chart(title: "\(a.id) (\(a.tier), \(a.api.rawValue)): requests admitted per second",
                            series: [Series(name: "fleet", values: fleet, color: "#000", width: 2.5)]
                                + nodes.enumerated().map { Series(name: $0.element, values: perNode[$0.offset], color: colors[$0.offset % colors.count], width: 1) },
                            cap: capPerSecond)
            if let t = result.tokenRows.first(where: { $0.consumer == a.id }) {
                charts += chart(title: "\(a.id): tokens admitted per second, Allot against post-paid counting",
                                series: [Series(name: "Allot (overshoot \(t.allotOvershoot))", values: t.allot, color: "#000", width: 2.5),
                                         Series(name: "post-paid (overshoot \(t.postPaidOvershoot))", values: t.postPaid, color: "#ff7f0e", width: 1.5)],
                                cap: t.capPerSecond)
            }
        }
        var rows = ""
        for r in result.rows {
            rows += "<tr><td>\(r.consumer)</td><td><code>\(escape(r.budget))</code></td><td>\(escape(r.cap))</td><td>\(r.admitted)</td><td>\(r.denied)</td><td class=\"\(r.overshoot == 0 ? "ok" : "bad")\">\(r.overshoot)</td></tr>\n"
        }
        var tokenRows = ""
        for t in result.tokenRows {
            tokenRows += "<tr><td>\(t.consumer)</td><td>\(t.api)</td><td><code>\(escape(t.budget))</code></td><td>\(String(format: "%.0f", t.capPerSecond)), \(t.burst)</td>"
                + "<td>\(String(format: "%.0f", DemoRunner.mean(t.allot))), \(t.allot.max() ?? 0)</td><td class=\"\(t.allotOvershoot == 0 ? "ok" : "bad")\">\(t.allotOvershoot)</td>"
                + "<td>\(String(format: "%.0f", DemoRunner.mean(t.postPaid))), \(t.postPaid.max() ?? 0)</td><td class=\"\(t.postPaidOvershoot == 0 ? "ok" : "bad")\">\(t.postPaidOvershoot)</td></tr>\n"
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
        <h2>Tokens per second against each token cap</h2>
        <table><tr><th>consumer</th><th>API</th><th>budget</th><th>cap (tokens/s, burst)</th><th>Allot mean, peak 1 s</th><th>Allot overshoot</th><th>post-paid mean, peak 1 s</th><th>post-paid overshoot</th></tr>
        \(tokenRows)</table>
        <p>Post-paid: the same requests (each costing what the mock upstream charges for it) replayed through
        counting after the answer, as Envoy AI Gateway, Kong and LiteLLM count tokens: a request passes while the
        counter is not spent, its tokens are counted when it ends, so what is in flight when the counter runs out
        lands above the cap. One exact central counter, no sync delay (kinder than a real fleet); requests/min
        counted up front as every peer does. Overshoot is measured the same way for both.</p>
        <h2>Admitted per second against the cap</h2>
        \(charts)
        </body></html>
        """
    }

    static let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]

    /// One line of a chart.
    struct Series {
        var name: String
        var values: [Int64]
        var color: String
        var width: Double
    }

    static func chart(title: String, series: [Series], cap: Double?) -> String {
        let w = 480.0, h = 200.0, left = 44.0, bottom = 24.0
        let count = series.map(\.values.count).max() ?? 1
        let top = max(Double(series.compactMap { $0.values.max() }.max() ?? 1), cap ?? 0, 1) * 1.15
        func x(_ i: Int) -> Double { left + (w - left - 8) * Double(i) / Double(max(1, count - 1)) }
        func y(_ v: Double) -> Double { h - bottom - (h - bottom - 8) * v / top }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        svg += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - 8)\" y2=\"\(h - bottom)\" stroke=\"#999\"/>"
        svg += "<text x=\"2\" y=\"\(y(top / 1.15) + 4)\" font-size=\"10\">\(Int(top / 1.15))</text><text x=\"2\" y=\"\(h - bottom)\" font-size=\"10\">0</text>"
        svg += "<text x=\"\(w - 60)\" y=\"\(h - 6)\" font-size=\"10\">seconds →</text>"
        // Thin lines first, the main one on top.
        for s in series.sorted(by: { $0.width < $1.width }) where !s.values.isEmpty {
            let pts = s.values.enumerated().map { String(format: "%.1f,%.1f", x($0.offset), y(Double($0.element))) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"\(s.width)\" points=\"\(pts)\"/>"
        }
        if let cap {
            svg += "<line x1=\"\(left)\" y1=\"\(y(cap))\" x2=\"\(w - 8)\" y2=\"\(y(cap))\" stroke=\"#d62728\" stroke-dasharray=\"6,4\" stroke-width=\"1.5\"/>"
            svg += "<text x=\"\(left + 4)\" y=\"\(y(cap) - 4)\" font-size=\"10\" fill=\"#d62728\">cap \(String(format: "%.1f", cap))/s</text>"
        }
        svg += "</svg>"
        let legend = series.map { "<span style=\"color:\($0.color)\">■ \(escape($0.name))</span>" }
        return "<figure><figcaption>\(escape(title))</figcaption>\(svg)<div style=\"font-size:12px\">\(legend.joined(separator: " "))</div></figure>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
