import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct VolumeInitializerTests {
    func layout(_ dir: TemporaryDirectory) throws -> VolumeLayout {
        try CofferConfiguration.resolve(flags: [.dbPath: dir.child("data/db.sqlite"), .mediaRoot: dir.child("media")], environment: [:]).layout
    }

    @Test func createsAFreshVolumeAtTheLatestSchema() throws {
        let dir = try TemporaryDirectory()
        let layout = try layout(dir)
        let oldMask = umask(0o077) // the seed's permissions hold whatever the umask
        defer { umask(oldMask) }
        let report = try VolumeInitializer.initialize(layout)
        #expect(report.schemaVersion == SchemaMigrations.latestVersion)
        for directory in [layout.mediaRoot, layout.libraryRoot, layout.tempRoot] {
            let info = try FileSystem.status(directory).get()
            #expect(info.kind == .directory)
            #expect(info.mode & 0o777 == 0o755, "\(directory)")
        }
        #expect(try FileSystem.status(layout.dbPath).get().mode & 0o777 == 0o644)
        // Nothing but the database is left beside it.
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.child("data")).sorted()
        #expect(names == ["db.sqlite"])
        let queue = try DatabaseAccess.openExisting(layout.dbPath, readOnly: true)
        let schema = try queue.read(SchemaInspector.inspect)
        #expect(schema.version == SchemaMigrations.latestVersion && schema.hasHistory)
        #expect(try queue.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
    }

    @Test func refusesAnExistingDatabaseAndChangesNothing() throws {
        let dir = try TemporaryDirectory()
        let layout = try layout(dir)
        _ = try VolumeInitializer.initialize(layout)
        try DatabaseQueue(path: layout.dbPath).write { db in
            try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('keep', 'u', 'QUEUED')")
        }
        let before = try Data(contentsOf: URL(fileURLWithPath: layout.dbPath))
        let error = #expect(throws: CofferError.self) { try VolumeInitializer.initialize(layout) }
        #expect(error?.status == .failed)
        #expect(try Data(contentsOf: URL(fileURLWithPath: layout.dbPath)) == before)
    }

    @Test func anEmptyFileIsNotADatabaseToProtect() throws {
        let dir = try TemporaryDirectory()
        let layout = try layout(dir)
        try FileManager.default.createDirectory(atPath: dir.child("data"), withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: layout.dbPath, contents: Data())
        _ = try VolumeInitializer.initialize(layout)
        #expect(try DatabaseAccess.openExisting(layout.dbPath, readOnly: true).read(SchemaInspector.inspect).version == SchemaMigrations.latestVersion)
    }

    @Test func dryRunCreatesNothing() throws {
        let dir = try TemporaryDirectory()
        let report = try VolumeInitializer.initialize(try layout(dir), dryRun: true)
        #expect(report.dryRun)
        #expect(report.created.contains(dir.child("media/library")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func aFileWhereTheMediaRootShouldBeIsRefusedBeforeAnythingIsWritten() throws {
        let dir = try TemporaryDirectory()
        FileManager.default.createFile(atPath: dir.child("media"), contents: Data("x".utf8))
        let layout = try layout(dir)
        let error = #expect(throws: CofferError.self) { try VolumeInitializer.initialize(layout) }
        #expect(error?.status == .failed)
        #expect(!FileManager.default.fileExists(atPath: dir.child("data")))
    }
}
