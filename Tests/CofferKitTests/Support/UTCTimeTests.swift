import CofferKit
import Foundation
import Testing

/// Coffer's own UTC formatting (no ICU) against Foundation's formatters as the oracle.
@Suite struct UTCTimeTests {
    static let instants: [Double] = [
        0, 951_782_400.5, // 2000-02-29 (a leap day)
        1_700_000_000.999_9, // cut to .999, never rounded into the next second
        1_795_622_462.123, 4_102_444_799, // 2099-12-31 23:59:59
    ]

    @Test(arguments: instants)
    func writesWhatFoundationWrites(seconds: Double) {
        let date = Date(timeIntervalSince1970: seconds)
        // Foundation rounds to the nearest second; Coffer cuts, as `date` does, so the second
        // of a snapshot's id is always the second of its time.
        let whole = Date(timeIntervalSince1970: seconds.rounded(.down))
        let plain = ISO8601DateFormatter()
        #expect(UTCTime.iso8601(date, fractions: false) == plain.string(from: whole))
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        #expect(UTCTime.compact(date) == formatter.string(from: whole))
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        #expect(UTCTime.sqlite(date) == formatter.string(from: whole))
        let milliseconds = Int((seconds - seconds.rounded(.down)) * 1000)
        #expect(UTCTime.iso8601(date).hasSuffix(String(format: ".%03dZ", milliseconds)))
        #expect(UTCTime.iso8601(date).prefix(19) == plain.string(from: whole).prefix(19))
    }

    @Test(arguments: instants)
    func readsBackWhatItWrites(seconds: Double) throws {
        let date = Date(timeIntervalSince1970: seconds)
        let back = try #require(UTCTime.parse(UTCTime.iso8601(date)))
        #expect(abs(back.timeIntervalSince1970 - seconds) < 0.001)
        #expect(UTCTime.parse(UTCTime.iso8601(date, fractions: false))?.timeIntervalSince1970 == seconds.rounded(.down))
    }

    @Test func readsOffsetsAndRejectsWhatIsNotATime() {
        #expect(UTCTime.parse("2026-11-25T17:01:02+01:00")?.timeIntervalSince1970 == UTCTime.parse("2026-11-25T16:01:02Z")?.timeIntervalSince1970)
        #expect(UTCTime.parse("2026-11-25T15:31:02.5-00:30")?.timeIntervalSince1970 == UTCTime.parse("2026-11-25T16:01:02.500Z")?.timeIntervalSince1970)
        for text in ["", "2026-11-25", "2026-11-25T16:01:02", "2026-13-25T16:01:02Z", "2026-11-25T16:01:02.Z",
                     "2026-11-25T16:01:02Zjunk", "2026-11-25 16:01:02Z", "２０２６-11-25T16:01:02Z"] {
            #expect(UTCTime.parse(text) == nil, "\(text)")
        }
    }
}
