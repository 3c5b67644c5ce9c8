import CofferKit
import Foundation
import GRDB

/// Damages a generated volume on purpose, one problem per finding kind that lives in the
/// data (not in the machine), and says where each one is, so tests and the demo can check
/// that `coffer verify` finds exactly these.
public enum ProblemPlanter {
    public struct Planted: Sendable, Equatable {
        public var kind: Finding.Kind
        public var jobID: String?
        /// Absolute path, bytes.
        public var path: [UInt8]?
    }

    /// Plants: a missing video, a video whose size differs from the row, a video path that is a
    /// directory, a COMPLETE job without a media row, an orphan library file, a temp directory
    /// of an unknown job, an expired temp directory of a COMPLETE job, and a media row whose
    /// job does not exist. Needs a volume of at least 4 COMPLETE jobs.
    public static func plantAll(in volume: GeneratedVolume, now: Date = Date()) throws -> [Planted] {
        let configuration = try CofferConfiguration.resolve(flags: [.dbPath: volume.dbPath, .mediaRoot: volume.mediaRoot], environment: [:])
        let layout = configuration.layout
        let queue = try DatabaseQueue(path: volume.dbPath, configuration: DatabaseAccess.configuration(readOnly: false))
        defer { try? queue.close() }
        var planted: [Planted] = []

        // Videos of plain-named COMPLETE jobs, newest last.
        let rows = try queue.read { db in
            try Row.fetchAll(db, sql: """
                SELECT j.id, m.video_path FROM jobs j JOIN media m ON m.job_id = j.id
                WHERE j.status = 'COMPLETE' AND typeof(m.video_path) = 'text' AND m.file_size_bytes < 1000000
                ORDER BY j.created_at LIMIT 4
                """)
        }
        guard rows.count == 4 else { throw FixtureFiles.Failure(description: "need 4 COMPLETE jobs to plant problems") }
        let videos: [(String, [UInt8])] = rows.map { ($0["id"], Array(($0["video_path"] as String).utf8)) }

        try FixtureFiles.remove(videos[0].1)
        planted.append(Planted(kind: .missingFile, jobID: videos[0].0, path: videos[0].1))

        try FixtureFiles.append(videos[1].1, Array("grown".utf8))
        planted.append(Planted(kind: .sizeMismatch, jobID: videos[1].0, path: videos[1].1))

        try FixtureFiles.remove(videos[2].1)
        try FixtureFiles.makeDirectories(videos[2].1)
        planted.append(Planted(kind: .notAFile, jobID: videos[2].0, path: videos[2].1))

        // A COMPLETE job whose media row is gone (its video becomes an orphan too).
        try queue.write { db in try db.execute(sql: "DELETE FROM media WHERE job_id = ?", arguments: [videos[3].0]) }
        planted.append(Planted(kind: .completeWithoutMedia, jobID: videos[3].0))
        planted.append(Planted(kind: .orphanFile, path: videos[3].1))

        let orphan = Array("\(layout.libraryRoot)/stray uploader/left over, \"copy\".mkv".utf8)
        var random = RandomSource(seed: 99)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
        defer { buffer.deallocate() }
        try FixtureFiles.write(orphan, size: 1234, random: &random, buffer: buffer)
        planted.append(Planted(kind: .orphanFile, path: orphan))

        let unknownID = "01900000-0000-7000-8000-00000000dead"
        let unknown = Array(layout.tempDirectory(jobID: unknownID).utf8)
        try FixtureFiles.makeDirectories(unknown)
        planted.append(Planted(kind: .unknownTempDirectory, path: unknown))

        // A COMPLETE job finished 3 days ago that still has its temp dir.
        let oldID = "01900000-0000-7000-8000-0000000000aa"
        let finished = now.timeIntervalSince1970 - 3 * 86400
        try queue.write { db in
            try db.execute(sql: """
                INSERT INTO jobs (id, url, created_at, status, completed_at) VALUES (?, 'https://video.example/old', ?, 'COMPLETE', ?)
                """, arguments: [oldID, VolumeGenerator.timestamp(finished - 600), VolumeGenerator.timestamp(finished)])
            try db.execute(sql: "INSERT INTO media (job_id, video_path, file_size_bytes) VALUES (?, ?, 0)",
                           arguments: [oldID, "\(layout.libraryRoot)/old/finished.mkv"])
        }
        try FixtureFiles.write(Array("\(layout.libraryRoot)/old/finished.mkv".utf8), size: 0, random: &random, buffer: buffer)
        let expired = Array(layout.tempDirectory(jobID: oldID).utf8)
        try FixtureFiles.makeDirectories(expired)
        planted.append(Planted(kind: .expiredTempDirectory, jobID: oldID, path: expired))

        // A media row of a job that does not exist, written with foreign keys off as a buggy
        // writer would.
        let ghostID = "01900000-0000-7000-8000-0000000000ff"
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            try db.execute(sql: "INSERT INTO media (job_id, video_path) VALUES (?, NULL)", arguments: [ghostID])
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        planted.append(Planted(kind: .foreignKey, jobID: ghostID))
        return planted
    }
}
