import CofferFixtures
import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct SchemaInspectorTests {
    @Test func pipelineMadeDatabaseIsVersionOneWithoutHistory() throws {
        let queue = try DatabaseQueue()
        try queue.write { try $0.execute(sql: SeedSchema.sql) }
        let report = try queue.read(SchemaInspector.inspect)
        #expect(report.version == 1)
        #expect(!report.hasHistory)
        #expect(report.differences.isEmpty)
    }

    @Test func whitespaceAndCommentsDoNotMatter() throws {
        let queue = try DatabaseQueue()
        let compact = SeedSchema.sql
            .split(separator: "\n").map { line in line.components(separatedBy: "--")[0] }
            .joined(separator: " ")
            .replacingOccurrences(of: "  ", with: " ")
        try queue.write { try $0.execute(sql: compact) }
        #expect(try queue.read(SchemaInspector.inspect).version == 1)
    }

    @Test func cofferMadeDatabaseHasHistory() throws {
        let queue = try DatabaseQueue()
        try SchemaMigrations.migrator().migrate(queue)
        let report = try queue.read(SchemaInspector.inspect)
        #expect(report.version == 2)
        #expect(report.hasHistory)
        #expect(report.appliedMigrations == ["0001_seed", "0002_media_fts"])
        // Coffer's own history table is not part of the schema.
        #expect(report.differences.isEmpty)
    }

    @Test(arguments: [
        ("CREATE TABLE extra (x)", "unexpected table extra"),
        ("DROP INDEX idx_jobs_status", "missing index idx_jobs_status on jobs(status)"),
        ("ALTER TABLE media ADD COLUMN codec TEXT", "unexpected column media.codec TEXT"),
        ("CREATE TRIGGER t AFTER INSERT ON jobs BEGIN SELECT 1; END", "unexpected trigger t on jobs"),
    ])
    func changesAreNamed(change: String, difference: String) throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: SeedSchema.sql)
            try db.execute(sql: change)
        }
        let report = try queue.read(SchemaInspector.inspect)
        #expect(report.version == nil)
        #expect(report.differences.contains(difference), "\(report.differences)")
    }

    @Test func historyFromANewerCofferIsNotRecognized() throws {
        let queue = try DatabaseQueue()
        try SchemaMigrations.migrator().migrate(queue)
        try queue.write { try $0.execute(sql: "INSERT INTO grdb_migrations VALUES ('0099_future')") }
        let report = try queue.read(SchemaInspector.inspect)
        #expect(report.version == nil)
        #expect(report.differences.contains { $0.contains("0099_future") })
    }

    @Test func foreignKeyActionsAreCompared() throws {
        let queue = try DatabaseQueue()
        let weakened = SeedSchema.sql.replacingOccurrences(
            of: "job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,\n  video_path",
            with: "job_id TEXT NOT NULL REFERENCES jobs(id),\n  video_path")
        #expect(weakened != SeedSchema.sql)
        try queue.write { try $0.execute(sql: weakened) }
        let report = try queue.read(SchemaInspector.inspect)
        #expect(report.version == nil)
        #expect(report.differences.contains { $0.hasPrefix("missing foreign key media.job_id") })
    }
}
