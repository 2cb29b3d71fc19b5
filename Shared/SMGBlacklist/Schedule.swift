public import Foundation

/// "Every day at HH:MM in a time zone", across daylight-saving changes: a time that does not
/// exist that day (spring forward) runs at the first minute after the gap; a time that exists
/// twice (fall back) runs once, at its first occurrence.
public struct DailySchedule: Sendable, Hashable, CustomStringConvertible {
    public let hour: Int
    public let minute: Int
    public let timeZone: TimeZone

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// `at` is `HH:MM`, `zone` an IANA name (`Europe/Berlin`).
    public init(at: String, zone: String) throws(Invalid) {
        let parts = at.split(separator: ":")
        guard parts.count == 2, let h = Int(parts[0]), let m = Int(parts[1]), (0..<24).contains(h), (0..<60).contains(m) else {
            throw Invalid(description: "\"\(at)\" is not HH:MM")
        }
        guard let tz = TimeZone(identifier: zone) else { throw Invalid(description: "\"\(zone)\" is not a time zone (e.g. Europe/Berlin)") }
        hour = h
        minute = m
        timeZone = tz
    }

    var calendar: Calendar {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = timeZone
        return c
    }

    /// The run of the local day `date` falls in.
    public func run(onDayOf date: Date) -> Date {
        let c = calendar
        let day = c.startOfDay(for: date)
        // Build from the day's start so a missing local time moves forward, never to another day.
        var components = c.dateComponents([.year, .month, .day], from: day)
        components.hour = hour
        components.minute = minute
        if let exact = c.date(from: components), c.component(.hour, from: exact) == hour,
           c.component(.minute, from: exact) == minute, c.isDate(exact, inSameDayAs: day) {
            // Fall back: `date(from:)` may pick the second occurrence; take the first.
            let earlier = exact.addingTimeInterval(-3600)
            if c.component(.hour, from: earlier) == hour, c.component(.minute, from: earlier) == minute,
               c.isDate(earlier, inSameDayAs: day) {
                return earlier
            }
            return exact
        }
        // Spring forward: the wall-clock time does not exist; the first instant after the gap.
        return c.nextDate(after: day, matching: DateComponents(hour: hour, minute: minute), matchingPolicy: .nextTime)
            ?? day.addingTimeInterval(Double(hour * 3600 + minute * 60))
    }

    /// The first run strictly after `date`.
    public func next(after date: Date) -> Date {
        let today = run(onDayOf: date)
        if today > date { return today }
        let c = calendar
        let tomorrow = c.date(byAdding: .day, value: 1, to: c.startOfDay(for: date)) ?? date.addingTimeInterval(86400)
        return run(onDayOf: tomorrow.addingTimeInterval(3600))
    }

    /// `YYYY-MM-DD` of `date` in the schedule's zone (one daily run per local day).
    public func localDay(_ date: Date) -> String {
        let d = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "%04d-%02d-%02d", d.year ?? 0, d.month ?? 0, d.day ?? 0)
    }

    public var description: String { String(format: "%02d:%02d %@", hour, minute, timeZone.identifier) }
}
