import Hummingbird
import HTTPTypes
import SMGAdmin
import SMGCore
import SMGStore
import Foundation

extension Admin {
    var pipelineStats: PipelineStats { PipelineStats(store: process.store) }

    /// The overview's numbers. Cost per call: one pipelined round trip for the stages (ZCARD and
    /// 2 × 500 members per pending set, HLEN, ZCARD), and for the rates the last 30 minutes of the
    /// global event stream read newest first in pages of 5,000, at most 60,000 entries (only each
    /// entry's type is looked at); a busier gateway shows `complete: false` and undercounts the
    /// oldest minutes. The page reloads every 10 s, so one open overview costs at most that per 10 s.
    func pipelineJSON() async throws -> (JSONValue, PipelineSnapshot, EventRates) {
        let stats = pipelineStats
        async let snapshotReading = stats.snapshot()
        async let ratesReading = stats.rates(minutes: 30)
        let (snapshot, rates) = try await (snapshotReading, ratesReading)
        let stages: [JSONValue] = snapshot.stages.map { s in
            .object(["topic": .string(s.topic), "pending": .int(s.pending),
                     "oldest_age_ms": s.oldestAgeMilliseconds.map { .int(Int($0)) } ?? .null])
        }
        let json: JSONValue = .object([
            "time": .string(QueueText.time(snapshot.now)),
            "stages": .array(stages), "held": .int(snapshot.held), "quarantined": .int(snapshot.quarantined),
            "rates": .object([
                "window_minutes": .int(rates.windowMinutes),
                "start": .string(QueueText.time(rates.startMilliseconds)),
                "series": .object(rates.series.mapValues { .array($0.map { .int($0) }) }),
                "scanned": .int(rates.scanned), "complete": .bool(rates.complete),
            ]),
        ])
        return (json, snapshot, rates)
    }

    func overviewRoutes(_ router: Router<AdminContext>) {
        router.get("/api/v1/pipeline") { request, context -> Response in
            JSONOut.response(try await pipelineJSON().0)
        }

        router.get("/") { request, context -> Response in
            let (_, snapshot, rates) = try await pipelineJSON()
            let rows = snapshot.stages.map { s -> [String] in
                ["<a href=\"/queue?topic=\(Page.segment(s.topic))\">\(Page.escape(s.topic))</a>", "\(s.pending)",
                 Page.escape(s.oldestAgeMilliseconds.map(QueueText.duration) ?? "—")]
            }
            let short = snapshot.stages.map {
                $0.topic.replacingOccurrences(of: "mail.", with: "").replacingOccurrences(of: "outbound.", with: "out.")
            }
            var body = Page.table(["stage", "pending", "oldest"], rows, id: "stages")
            body += "<p id=\"held-quarantined\"><a href=\"/queue?state=held\">Held: \(snapshot.held)</a> · "
                + "<a href=\"/queue?state=quarantined\">Quarantined: \(snapshot.quarantined)</a></p>"
            body += "<div id=\"backlog-charts\">"
                + Chart.bars(id: "chart-pending", title: "pending per stage", values: snapshot.stages.map(\.pending), labels: short)
                + Chart.bars(id: "chart-oldest", title: "oldest (seconds) per stage",
                             values: snapshot.stages.map { Int(($0.oldestAgeMilliseconds ?? 0) / 1000) }, labels: short)
                + "</div>"
            body += "<h2>Events per minute, last \(rates.windowMinutes) minutes</h2>"
            if !rates.complete {
                body += "<p class=\"note\" id=\"rates-incomplete\">Counted the newest \(rates.scanned) events only: minutes before "
                    + "\(Page.escape(QueueText.time(rates.coveredSinceMilliseconds))) are undercounted.</p>"
            }
            let minuteLabels = (0..<rates.windowMinutes).map { i in i == rates.windowMinutes - 1 ? "now" : "-\(rates.windowMinutes - 1 - i)m" }
            body += "<div id=\"rate-charts\">"
            for type in PipelineStats.rateTypes {
                let values = rates.series[type] ?? []
                body += Chart.bars(id: "chart-rate-" + type.replacingOccurrences(of: ".", with: "-"),
                                   title: "\(type) (\(values.reduce(0, +)) in \(rates.windowMinutes)m)", values: values,
                                   labels: minuteLabels, axis: ["-\(rates.windowMinutes - 1)m", "now"])
            }
            body += "</div>"
            body += "<p class=\"note\">As of \(Page.escape(QueueText.time(snapshot.now))); reloads every 10 s.</p>"
                + "<script>setTimeout(function () { location.reload(); }, 10000);</script>"
            return Page.render("Overview", context, request: request, body: body)
        }
    }
}

/// Small bar charts as inline SVG, drawn on the server (no script, no library). Every text in
/// them goes through `Page.escape`.
enum Chart {
    /// One bar per value, the largest value written at the top; each bar has a tooltip
    /// (`<title>label: value</title>`). `labels` go under the bars unless `axis` gives the two
    /// ends' labels instead (for long series).
    static func bars(id: String, title: String, values: [Int], labels: [String], axis: [String]? = nil,
                     width: Int = 320, height: Int = 130) -> String {
        let top = 22, bottom = 18, side = 6
        let plotHeight = height - top - bottom, plotWidth = width - 2 * side
        let maximum = max(1, values.max() ?? 0)
        let slot = values.isEmpty ? Double(plotWidth) : Double(plotWidth) / Double(values.count)
        let gap = slot > 6 ? 2.0 : 0.5
        var svg = "<svg class=\"chart\" id=\"\(Page.escape(id))\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\""
            + " viewBox=\"0 0 \(width) \(height)\" role=\"img\" aria-label=\"\(Page.escape(title))\">"
        svg += "<text x=\"\(side)\" y=\"14\" font-size=\"12\" fill=\"#222\">\(Page.escape(title))</text>"
        svg += "<text x=\"\(width - side)\" y=\"14\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">max \(values.max() ?? 0)</text>"
        svg += "<line x1=\"\(side)\" y1=\"\(top + plotHeight)\" x2=\"\(width - side)\" y2=\"\(top + plotHeight)\" stroke=\"#bbb\"/>"
        for (index, value) in values.enumerated() {
            let h = Double(plotHeight) * Double(value) / Double(maximum)
            let x = Double(side) + Double(index) * slot + gap / 2
            let label = index < labels.count ? labels[index] : "\(index)"
            svg += "<rect x=\"\(format(x))\" y=\"\(format(Double(top + plotHeight) - h))\" width=\"\(format(max(0.5, slot - gap)))\""
                + " height=\"\(format(max(h, value > 0 ? 1 : 0)))\" fill=\"#457b9d\"><title>\(Page.escape(label)): \(value)</title></rect>"
        }
        let baseline = height - 5
        if let axis, axis.count == 2 {
            svg += "<text x=\"\(side)\" y=\"\(baseline)\" font-size=\"10\" fill=\"#666\">\(Page.escape(axis[0]))</text>"
            svg += "<text x=\"\(width - side)\" y=\"\(baseline)\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">\(Page.escape(axis[1]))</text>"
        } else {
            for (index, label) in labels.prefix(values.count).enumerated() {
                let x = Double(side) + (Double(index) + 0.5) * slot
                svg += "<text x=\"\(format(x))\" y=\"\(baseline)\" font-size=\"10\" fill=\"#666\" text-anchor=\"middle\">\(Page.escape(label))</text>"
            }
        }
        return svg + "</svg>"
    }

    static func format(_ v: Double) -> String { String(format: "%.1f", v) }
}
