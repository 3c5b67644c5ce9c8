import Foundation

/// Which snapshots `coffer prune` keeps: restic's `forget` rules.
///
/// Snapshots are taken newest first. `last` keeps the newest N. `daily` keeps, for each of the
/// last N days that have snapshots, the newest snapshot of that day; `weekly` (ISO weeks),
/// `monthly` and `yearly` likewise. Days without snapshots do not count. A snapshot kept by one
/// rule counts for the others too. Days, weeks, months and years are counted in UTC.
public struct KeepPolicy: Equatable, Sendable {
    public var last = 0
    public var daily = 0
    public var weekly = 0
    public var monthly = 0
    public var yearly = 0

    public init(last: Int = 0, daily: Int = 0, weekly: Int = 0, monthly: Int = 0, yearly: Int = 0) {
        self.last = last; self.daily = daily; self.weekly = weekly; self.monthly = monthly; self.yearly = yearly
    }

    public var isEmpty: Bool { last == 0 && daily == 0 && weekly == 0 && monthly == 0 && yearly == 0 }

    /// Why each kept snapshot is kept, by index into `times` (any order); the others go.
    public func apply(_ times: [Date]) -> [Int: [String]] {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let order = times.indices.sorted { times[$0] > times[$1] }
        var reasons: [Int: [String]] = [:]
        func bucketRule(_ name: String, _ count: Int, _ key: (Date) -> String) {
            guard count > 0 else { return }
            var seen = Set<String>()
            for index in order {
                let bucket = key(times[index])
                guard !seen.contains(bucket) else { continue }
                guard seen.count < count else { break }
                seen.insert(bucket)
                reasons[index, default: []].append("\(name) \(bucket)")
            }
        }
        for (rank, index) in order.prefix(max(0, last)).enumerated() { reasons[index, default: []].append("last \(rank + 1)") }
        bucketRule("daily", daily) { date in
            let c = calendar.dateComponents([.year, .month, .day], from: date)
            return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
        }
        bucketRule("weekly", weekly) { date in
            let c = calendar.dateComponents([.yearForWeekOfYear, .weekOfYear], from: date)
            return String(format: "%04d-W%02d", c.yearForWeekOfYear!, c.weekOfYear!)
        }
        bucketRule("monthly", monthly) { date in
            let c = calendar.dateComponents([.year, .month], from: date)
            return String(format: "%04d-%02d", c.year!, c.month!)
        }
        bucketRule("yearly", yearly) { date in String(calendar.component(.year, from: date)) }
        return reasons
    }
}
