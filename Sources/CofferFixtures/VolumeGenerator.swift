import CofferKit
import Foundation
import GRDB

/// Builds realistic volumes of any size: the pipeline's database with jobs in every status and
/// age, media files in `library/{uploader}/{title}.{ext}`, temp directories of jobs in flight,
/// events with JSON payloads, and (optionally) hostile names and a file over 4 GiB.
///
/// The volume it makes is consistent: `coffer verify` finds nothing on it (with thresholds
/// that the machine's free space passes). ``ProblemPlanter`` damages it on purpose.
public enum VolumeGenerator {
    /// Statuses with their share of jobs, roughly as a busy pipeline has them.
    static let statusWeights: [(String, Int)] = [
        ("COMPLETE", 62), ("FAILED", 8), ("CANCELED", 4), ("QUEUED", 8), ("DOWNLOADING", 4),
        ("DOWNLOADED", 3), ("DUBBING", 4), ("DUBBED", 3), ("MUXING", 4),
    ]
    static let plainUploaders = ["Channel One", "dubbing-lab", "NatureDocs", "Lectures4All", "retro_gaming"]
    static let plainTitles = ["Episode", "Interview", "Lecture", "Trailer", "Highlights", "Behind the scenes"]

    public static func generate(_ spec: VolumeSpec, dbPath: String, mediaRoot: String) throws -> GeneratedVolume {
        let configuration = try CofferConfiguration.resolve(
            flags: [.dbPath: dbPath, .mediaRoot: mediaRoot], environment: [:])
        let layout = configuration.layout
        var volume = GeneratedVolume(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot)

        if spec.schema == .coffer {
            _ = try VolumeInitializer.initialize(layout)
        } else {
            try FixtureFiles.makeDirectories(Array((layout.dbPath as NSString).deletingLastPathComponent.utf8))
            for dir in [layout.libraryRoot, layout.tempRoot] { try FixtureFiles.makeDirectories(Array(dir.utf8)) }
        }
        let queue = try DatabaseQueue(path: layout.dbPath, configuration: DatabaseAccess.configuration(readOnly: false))
        var random = RandomSource(seed: spec.seed)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        let now = spec.now.timeIntervalSince1970

        try queue.inDatabase { db in
            if spec.schema == .pipeline { try db.execute(sql: SeedSchema.sql) }
            try db.inTransaction {
                let insertJob = try db.makeStatement(sql: """
                    INSERT INTO jobs (id, url, created_at, requested_dubbing, target_lang, status, priority,
                                      format_preset, output_container, retries, error, completed_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                let insertMedia = try db.makeStatement(sql: """
                    INSERT INTO media (job_id, video_path, audio_original_path, audio_dubbed_path, temp_dir,
                                       duration_sec, width, height, source_title, source_id, source_uploader, file_size_bytes)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
                let insertEvent = try db.makeStatement(sql: "INSERT INTO job_events (job_id, ts, event, payload) VALUES (?, ?, ?, ?)")

                for index in 0..<spec.jobs {
                    let status = pickStatus(index: index, &random)
                    let finished = SeedSchema.finishedStatuses.contains(status)
                    // Finished jobs: up to 120 days old; unfinished: minutes to hours.
                    let age = finished ? Double(random.next() % (120 * 86400)) + 3600 : Double(random.next() % (6 * 3600)) + 60
                    let created = now - age
                    let completed = finished ? min(now - 1, created + Double(random.next() % 7200) + 60) : nil
                    let id = uuidV7(milliseconds: UInt64(created * 1000), &random)
                    let dubbing = random.next() % 2 == 0
                    let container = ["mkv", "mp4", "webm"][Int(random.next() % 3)]
                    let error: String? = status == "FAILED" ? "yt-dlp exited 1: HTTP Error 403: Forbidden, \"quoted\"\nsecond line" : nil
                    try insertJob.execute(arguments: [
                        id, "https://video.example/watch?v=\(index)&list=a,b", timestamp(created), dubbing, ["ru", "en", "de"][index % 3],
                        status, Int(random.next() % 5), ["bestvideo+bestaudio", "best", nil][index % 3], container,
                        status == "FAILED" ? 3 : 0, error, completed.map(timestamp),
                    ])
                    volume.jobs += 1
                    volume.jobsByStatus[status, default: 0] += 1

                    // Names: the first COMPLETE jobs use every hostile name (so even a small volume
                    // has each one on disk), later ones alternate hostile and plain names.
                    let uploader: [UInt8], title: [UInt8]
                    let hostile = spec.hostileNames ? HostileNames.text : []
                    let cursor = volume.completeJobIDs.count
                    if spec.hostileNames, index == 0 {
                        uploader = Array("edge-cases".utf8); title = Array(HostileNames.longName.dropLast(4))
                    } else if spec.hostileNames, index == 1 {
                        uploader = HostileNames.notUTF8; title = Array("not utf-8 uploader".utf8)
                    } else if status == "COMPLETE", !hostile.isEmpty, cursor < hostile.count || cursor % 2 == 0 {
                        uploader = Array(hostile[cursor % hostile.count].utf8)
                        title = Array("\(hostile[(cursor + 7) % hostile.count]) #\(index)".utf8)
                    } else {
                        uploader = Array(plainUploaders[index % plainUploaders.count].utf8)
                        title = Array("\(plainTitles[Int(random.next() % UInt64(plainTitles.count))]) \(index)".utf8)
                    }
                    // Sizes: about one file in twenty is empty; with hostile names the second job's is.
                    let size = spec.largeFile && index == 2 && status == "COMPLETE" ? -1
                        : (random.next() % 20 == 0 || (spec.hostileNames && index == 1) ? 0 : Int(random.next() % UInt64(spec.maxFileBytes + 1)))

                    let tempDir = Array(layout.tempDirectory(jobID: id).utf8)
                    let retained = completed.map { now - $0 < (status == "COMPLETE" ? 20 * 3600 : 6 * 86400) } ?? true
                    var media: (video: [UInt8]?, original: [UInt8]?, dubbed: [UInt8]?, temp: [UInt8]?, bytes: Int64?)?

                    switch status {
                    case "COMPLETE":
                        let video = Array("\(layout.libraryRoot)/".utf8) + uploader + [UInt8(ascii: "/")] + title + Array(".\(container)".utf8)
                        let written: Int64
                        if size < 0 {
                            written = (Int64(1) << 32) + 4097
                            try FixtureFiles.writeSparse(video, size: written)
                        } else {
                            try FixtureFiles.write(video, size: size, random: &random, buffer: buffer)
                            written = Int64(size)
                        }
                        record(video, written, &volume)
                        volume.completeJobIDs.append(id)
                        var dubbed: [UInt8]?
                        if retained {
                            // Finished less than 24 h ago: the temp dir (and the dubbed track) are still there.
                            dubbed = dubbing ? tempDir + Array("/audio_dubbed.wav".utf8) : nil
                            try writeTemp(tempDir, files: dubbed.map { [$0] } ?? [], spec, &random, buffer, &volume)
                        }
                        media = (video, nil, dubbed, retained ? tempDir : nil, written)
                    case "DOWNLOADED", "DUBBING", "DUBBED", "MUXING":
                        let video = tempDir + Array("/video.\(container)".utf8)
                        let original = tempDir + Array("/audio_original.wav".utf8)
                        let dubbed = ["DUBBED", "MUXING"].contains(status) && dubbing ? tempDir + Array("/audio_dubbed.wav".utf8) : nil
                        try writeTemp(tempDir, files: [video, original] + (dubbed.map { [$0] } ?? []), spec, &random, buffer, &volume)
                        let videoSize = (try? FileSystem.status(video).get().size) ?? 0
                        media = (video, original, dubbed, tempDir, videoSize)
                    case "DOWNLOADING":
                        try writeTemp(tempDir, files: [tempDir + Array("/video.\(container).part".utf8)], spec, &random, buffer, &volume)
                    case "FAILED":
                        if retained {
                            try writeTemp(tempDir, files: [tempDir + Array("/video.\(container).part".utf8)], spec, &random, buffer, &volume)
                        }
                    default:
                        break
                    }
                    if let media {
                        try insertMedia.execute(arguments: [
                            id, pathValue(media.video), pathValue(media.original), pathValue(media.dubbed), pathValue(media.temp),
                            Double(random.next() % 7200) + 0.5, 1920, 1080,
                            String(decoding: title, as: UTF8.self), "src-\(index)", String(decoding: uploader, as: UTF8.self),
                            media.bytes,
                        ])
                        volume.mediaRows += 1
                    }

                    let events = spec.eventsPerJob.lowerBound + Int(random.next() % UInt64(spec.eventsPerJob.count))
                    for n in 0..<events {
                        let (event, payload) = eventPayload(n, of: events, status: status, &random)
                        try insertEvent.execute(arguments: [id, timestamp(created + Double(n * 30)), event, payload])
                        volume.events += 1
                    }
                }
                return .commit
            }
            _ = try db.checkpoint(.truncate)
        }
        try queue.close()
        return volume
    }

    static func record(_ path: [UInt8], _ size: Int64, _ volume: inout GeneratedVolume) {
        volume.files += 1
        volume.bytes += size
        volume.filePaths.append(path)
    }

    static func writeTemp(_ dir: [UInt8], files: [[UInt8]], _ spec: VolumeSpec, _ random: inout RandomSource,
                          _ buffer: UnsafeMutableRawBufferPointer, _ volume: inout GeneratedVolume) throws {
        try FixtureFiles.makeDirectories(dir)
        volume.tempDirectories += 1
        for file in files {
            let size = Int(random.next() % UInt64(min(8192, spec.maxFileBytes) + 1))
            try FixtureFiles.write(file, size: size, random: &random, buffer: buffer)
            record(file, Int64(size), &volume)
        }
    }

    /// A path as the database holds it: TEXT when it is UTF-8, else the exact bytes as a BLOB.
    static func pathValue(_ path: [UInt8]?) -> DatabaseValue {
        guard let path else { return .null }
        if let text = String(validating: path, as: UTF8.self) { return text.databaseValue }
        return Data(path).databaseValue
    }

    static func pickStatus(index: Int, _ random: inout RandomSource) -> String {
        // The first jobs cover every status, so even a tiny volume has each one.
        if index < statusWeights.count { return ["COMPLETE", "COMPLETE", "COMPLETE", "FAILED", "CANCELED", "QUEUED",
                                                 "DOWNLOADING", "DOWNLOADED", "MUXING"][index] }
        let total = statusWeights.reduce(0) { $0 + $1.1 }
        var draw = Int(random.next() % UInt64(total))
        for (status, weight) in statusWeights {
            if draw < weight { return status }
            draw -= weight
        }
        return "COMPLETE"
    }

    static func eventPayload(_ n: Int, of count: Int, status: String, _ random: inout RandomSource) -> (String, String?) {
        if n == 0 { return ("started", #"{"worker":"download-1","attempt":1}"#) }
        if n == count - 1 {
            switch status {
            case "COMPLETE": return ("finished", #"{"ok":true}"#)
            case "FAILED": return ("error", #"{"message":"HTTP 403, \"forbidden\"\nretry later","code":403}"#)
            default: break
            }
        }
        let percent = Double(random.next() % 1000) / 10
        return ("progress", #"{"percent":\#(percent),"note":"=SUM(A1:A2), emoji 🎞"}"#)
    }

    /// `YYYY-MM-DD HH:MM:SS` in UTC, as SQLite's CURRENT_TIMESTAMP writes it.
    public static func timestamp(_ seconds: Double) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// A UUIDv7: 48 bits of milliseconds, version 7, variant 10, random bits.
    static func uuidV7(milliseconds: UInt64, _ random: inout RandomSource) -> String {
        let r = random.next()
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8((milliseconds >> (8 * (5 - i))) & 0xFF) }
        for i in 6..<16 { bytes[i] = UInt8(truncatingIfNeeded: (i < 14 ? r >> (8 * (i - 6)) : random.next())) }
        bytes[6] = 0x70 | (bytes[6] & 0x0F)
        bytes[8] = 0x80 | (bytes[8] & 0x3F)
        let hex = bytes.map { String($0, radix: 16).leftPadded2 }.joined()
        let h = Array(hex)
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
    }
}

extension String {
    fileprivate var leftPadded2: String { count == 1 ? "0" + self : self }
}
