import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Times in UTC as Coffer writes them: ISO 8601 in records and locks, compact in ids and file
/// names, SQLite's form in queries.
///
/// Written with `gmtime_r`/`timegm`, not Foundation's formatters: on Linux those load ICU's
/// data, about 6 MB more resident memory for every run of every command.
public enum UTCTime {
    /// `2026-11-25T16:01:02.345Z`, or `2026-11-25T16:01:02Z` without `fractions`
    /// (milliseconds, cut, not rounded: a time never moves into the next second).
    public static func iso8601(_ date: Date, fractions: Bool = true) -> String {
        let (text, milliseconds) = format(date, dateSeparator: "-", middle: "T", timeSeparator: ":")
        return text + (fractions ? "." + pad(Int32(milliseconds), 3) : "") + "Z"
    }

    /// `20261125T160102Z`: sortable, and safe in a file name.
    public static func compact(_ date: Date) -> String {
        format(date, dateSeparator: "", middle: "T", timeSeparator: "").text + "Z"
    }

    /// `2026-11-25 16:01:02`: SQLite's `datetime()` form, which compares as text.
    public static func sqlite(_ date: Date) -> String {
        format(date, dateSeparator: "-", middle: " ", timeSeparator: ":").text
    }

    /// Date and time to the second, with the separators given, and the milliseconds beside.
    static func format(_ date: Date, dateSeparator: String, middle: String, timeSeparator: String) -> (text: String, milliseconds: Int) {
        let interval = date.timeIntervalSince1970
        let whole = interval.rounded(.down)
        var seconds = time_t(whole)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let day = [pad(parts.tm_year + 1900, 4), pad(parts.tm_mon + 1, 2), pad(parts.tm_mday, 2)].joined(separator: dateSeparator)
        let time = [pad(parts.tm_hour, 2), pad(parts.tm_min, 2), pad(parts.tm_sec, 2)].joined(separator: timeSeparator)
        return (day + middle + time, min(999, Int((interval - whole) * 1000)))
    }

    /// Reads `YYYY-MM-DDTHH:MM:SS`, with optional fractions of a second, then `Z` or an offset
    /// `±HH:MM`: what `iso8601` writes and what earlier versions wrote. Nil for anything else.
    public static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        var index = 0
        func number(_ digits: Int) -> Int? {
            guard index + digits <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[index..<index + digits] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            index += digits
            return value
        }
        func expect(_ character: Character) -> Bool {
            guard index < bytes.count, bytes[index] == character.asciiValue else { return false }
            index += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
              expect("T") || expect("t"), let hour = number(2), expect(":"), let minute = number(2), expect(":"),
              let second = number(2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var fraction = 0.0
        if expect(".") {
            var scale = 0.1
            let start = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                fraction += Double(bytes[index] - UInt8(ascii: "0")) * scale
                scale /= 10
                index += 1
            }
            guard index > start else { return nil }
        }
        var offset = 0
        if expect("Z") || expect("z") {
        } else if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            index += 1
            guard let hours = number(2), expect(":"), let minutes = number(2), hours < 24, minutes < 60 else { return nil }
            offset = sign * (hours * 3600 + minutes * 60)
        } else {
            return nil
        }
        guard index == bytes.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = timegm(&parts)
        return Date(timeIntervalSince1970: Double(seconds - offset) + fraction)
    }

    static func pad(_ value: Int32, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
