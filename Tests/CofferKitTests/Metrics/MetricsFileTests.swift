@testable import CofferKit
import Foundation
import Testing

@Suite struct MetricsFileTests {
    func run(_ command: String, _ code: Int32, repository: String?, at time: TimeInterval) -> MetricsFile.Run {
        MetricsFile.Run(command: command, exitCode: code, started: Date(timeIntervalSince1970: time - 2),
                        finished: Date(timeIntervalSince1970: time), figures: RunFigures(repository: repository, files: 3))
    }

    @Test func labelValuesAreEscapedAndReadBack() throws {
        let odd = "/backups/a \"quoted\" \\ folder\nwith a line feed"
        let text = MetricsFile.render(run("backup", 0, repository: odd, at: 1_700_000_000), existing: nil)
        #expect(text.contains(#"repository="/backups/a \"quoted\" \\ folder\nwith a line feed""#), "\(text)")
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("coffer_last_files") })
        let sample = try #require(MetricsFile.parse(String(line)))
        #expect(sample.label("repository") == odd && sample.label("command") == "backup" && sample.value == "3")
        // Merging into itself finds the series again: replaced, not duplicated.
        let again = MetricsFile.render(run("backup", 0, repository: odd, at: 1_700_000_100), existing: text)
        #expect(again.components(separatedBy: "coffer_last_files{").count == 2, "\(again)")
        #expect(again.contains(" 1700000100\n") && !again.contains(" 1700000000\n"))
    }

    @Test func aFailedRunKeepsTheLastSuccessAndOtherSeriesStay() {
        var text = MetricsFile.render(run("backup", 0, repository: "/r", at: 1_700_000_000), existing: nil)
        text = MetricsFile.render(run("cleanup", 0, repository: nil, at: 1_700_000_050), existing: text)
        text = MetricsFile.render(run("backup", 0, repository: "/other", at: 1_700_000_060), existing: text)
        text = MetricsFile.render(run("backup", 3, repository: "/r", at: 1_700_000_100), existing: text)
        #expect(text.contains("coffer_last_success_timestamp_seconds{command=\"backup\",repository=\"/r\"} 1700000000\n"), "\(text)")
        #expect(text.contains("coffer_last_run_timestamp_seconds{command=\"backup\",repository=\"/r\"} 1700000100\n"))
        #expect(text.contains("coffer_last_exit_code{command=\"backup\",repository=\"/r\"} 3\n"))
        #expect(text.contains("coffer_last_exit_code{command=\"cleanup\"} 0\n"))
        #expect(text.contains("coffer_last_exit_code{command=\"backup\",repository=\"/other\"} 0\n"))
        #expect(text.components(separatedBy: "# TYPE coffer_last_exit_code gauge").count == 2, "one header per family")
    }

    @Test func theFileIsReplacedWholeAndNothingIsLeftBeside() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/coffer.prom"
        try MetricsFile.record(run("backup", 0, repository: "/r", at: 1_700_000_000), at: path)
        try MetricsFile.record(run("verify", 1, repository: "/r", at: 1_700_000_010), at: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["coffer.prom"])
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("command=\"backup\"") && text.contains("command=\"verify\""))
        #expect(throws: CofferError.self) { try MetricsFile.check(dir.path + "/missing/coffer.prom") }
        #expect(throws: CofferError.self) { try MetricsFile.check(dir.path + "/coffer.txt") }
        // Written by a Windows editor: CRLF lines are read, and the series kept.
        try "# TYPE other_gauge gauge\r\nother_gauge{job=\"x\"} 4\r\n".write(toFile: dir.path + "/crlf.prom", atomically: true, encoding: .utf8)
        try MetricsFile.check(dir.path + "/crlf.prom")
        try MetricsFile.record(run("backup", 0, repository: "/r", at: 1_700_000_000), at: dir.path + "/crlf.prom")
        #expect(try String(contentsOfFile: dir.path + "/crlf.prom", encoding: .utf8).contains("other_gauge{job=\"x\"} 4\n"))
    }
}
