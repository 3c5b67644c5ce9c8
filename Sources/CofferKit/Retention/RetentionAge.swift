import Foundation

/// A retention age such as `30d`, `12h`, `2w`, `90m` or `45s`.
public struct RetentionAge: Equatable, Sendable {
    public var text: String
    public var seconds: TimeInterval

    public init(parsing text: String) throws {
        let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let unit = trimmed.last, let scale = units[unit], let count = Int(trimmed.dropLast()), count >= 0,
              trimmed.dropLast().allSatisfy(\.isASCII) else {
            throw CofferError(.usage, operation: "read duration", subject: text, cause: "not a duration",
                              hint: "write a whole number and a unit: 45s, 90m, 12h, 30d or 2w")
        }
        // The cutoff, now minus the age, must stay a date SQLite and the calendar can write.
        guard TimeInterval(count) * scale <= Self.longest else {
            throw CofferError(.usage, operation: "read duration", subject: text, cause: "longer than 1000 years",
                              hint: "write at most \(Int(Self.longest / 86400))d")
        }
        self.text = trimmed
        seconds = TimeInterval(count) * scale
    }

    /// 1000 years of 365.25 days.
    static let longest: TimeInterval = 1000 * 365.25 * 86400
}
