import CofferFixtures
import CofferKit
import Crypto
import Foundation
import Testing

@Suite struct RepositoryCLITests {
    func json(_ text: String) throws -> [String: Any] { try jsonObject(text) }

    func volume(_ scratch: Scratch, jobs: Int = 30) throws -> (flags: [String], repo: String) { try cliVolume(scratch, jobs: jobs) }

    @Test func backupSnapshotsVerifyRestoreEndToEnd() throws {
        let scratch = try Scratch()
        let (flags, repo) = try cliVolume(scratch, jobs: 30, videoSizes: VolumeSpec.testVideoSizes)
        let quiet = try CofferBinary.run(["backup", "--quiet", "--tag", "nightly"] + flags)
        #expect(quiet.status == 0, "\(quiet.stderr)")
        #expect(quiet.stdout.isEmpty && quiet.stderr.isEmpty, "cron mail must stay empty")

        let second = try CofferBinary.run(["backup", "--json"] + flags)
        #expect(second.status == 0)
        let backup = try json(second.stdout)
        #expect(backup["bytes_read"] as? Int == 0)
        #expect(backup["files_added"] as? Int == 0)

        let list = try CofferBinary.run(["snapshots", "--repo", repo, "--json"])
        let snapshots = try #require(try json(list.stdout)["snapshots"] as? [[String: Any]])
        #expect(snapshots.count == 2)
        #expect(snapshots[0]["tags"] as? [String] == ["nightly"])
        for key in ["id", "time", "host", "files", "bytes", "bytes_added", "rows"] { #expect(snapshots[0][key] != nil, "\(key)") }
        let text = try CofferBinary.run(["snapshots", "--repo", repo])
        #expect(text.stdout.contains("2 snapshot(s)"))

        let verify = try CofferBinary.run(["verify", "--repo", repo, "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(verify.stdout.contains("no findings"))

        let target = ["--db", scratch.child("new/db.sqlite"), "--media-root", scratch.child("new/media"), "--repo", repo,
                      "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        let dry = try CofferBinary.run(["restore", "--dry-run"] + target)
        #expect(dry.status == 0)
        #expect(!FileManager.default.fileExists(atPath: scratch.child("new")))
        let restore = try CofferBinary.run(["restore", "--json", "--snapshot", String((snapshots[0]["id"] as! String).prefix(20))] + target)
        #expect(restore.status == 0, "\(restore.stderr)")
        let restored = try json(restore.stdout)
        #expect((restored["verify"] as? [String: Any])?["exit_code"] as? Int == 0)
        #expect(restored["restore_seconds"] as? Double != nil)
        let again = try CofferBinary.run(["restore"] + target)
        #expect(again.status == 2)
        #expect(again.stderr.contains("hint: restore into a fresh"))
    }

    /// A damaged record does not hide the others: `snapshots` lists them, names the damaged
    /// one, and exits 1 (so cron mails it).
    @Test func snapshotsNamesADamagedRecordAndExitsOne() throws {
        let scratch = try Scratch()
        let (flags, repo) = try volume(scratch, jobs: 10)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        #expect(try CofferBinary.run(["backup", "--quiet", "--full"] + flags).status == 0)
        let records = try FileManager.default.contentsOfDirectory(atPath: repo + "/snapshots").sorted()
        #expect(records.count == 2)
        let damaged = repo + "/snapshots/" + records[0]
        chmod(damaged, 0o644)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: damaged))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: damaged))

        let text = try CofferBinary.run(["snapshots", "--repo", repo])
        #expect(text.status == 1, "\(text.stderr)")
        #expect(text.stdout.contains("DAMAGED snapshots/\(records[0])"), "\(text.stdout)")
        #expect(text.stdout.contains(String(records[1].dropLast(".jsonl".count))), "\(text.stdout)")
        let listed = try CofferBinary.run(["snapshots", "--repo", repo, "--json"])
        #expect(listed.status == 1)
        let document = try json(listed.stdout)
        #expect((document["snapshots"] as? [[String: Any]])?.count == 1)
        #expect((document["damaged"] as? [String: Any])?["snapshots/\(records[0])"] != nil, "\(listed.stdout)")
    }

    @Test func verifySwitchesToTheRepositoryOnlyWithTheFlag() throws {
        let scratch = try Scratch()
        let (flags, repo) = try volume(scratch, jobs: 10)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        // COFFER_REPO alone leaves verify on the live volume.
        let live = try CofferBinary.run(["verify", "--json"] + flags.filter { $0 != "--repo" && $0 != repo },
                                        environment: ["COFFER_REPO": repo])
        #expect(try json(live.stdout)["db_path"] != nil)
        let misuse = try CofferBinary.run(["verify", "--read-data"], environment: ["COFFER_REPO": repo])
        #expect(misuse.status == 64)
    }

    /// A backup refused by the lock names who holds it, a reader (verify, restore: a shared
    /// lock) as well as a writer: the process, its pid, host and start time.
    @Test(arguments: [false, true])
    func aBackupWhileAnotherHoldsTheLockExitsThree(shared: Bool) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/flock") else {
            print("skipped: flock (util-linux) is missing")
            return
        }
        let scratch = try Scratch()
        let (flags, repo) = try volume(scratch, jobs: 10)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = (shared ? ["--shared"] : []) + [repo + "/lock", "sleep", "3"]
        try holder.run()
        defer { holder.waitUntilExit() }
        Thread.sleep(forTimeInterval: 0.3)
        let second = try CofferBinary.run(["backup"] + flags)
        #expect(second.status == 3)
        #expect(second.stderr.contains("error: lock repository \(repo): held by flock, pid \(holder.processIdentifier) on \(ProcessInfo.processInfo.hostName), started 20"),
                "\(second.stderr)")
    }

    @Test func repositoryDamageExitsOneNamingTheFile() throws {
        let scratch = try Scratch()
        let (flags, repo) = try volume(scratch, jobs: 10)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let pack = try #require(try FileManager.default.contentsOfDirectory(atPath: repo + "/packs").first)
        let path = repo + "/packs/" + pack
        chmod(path, 0o644)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size - 1024 * 3)
        handle.write(Data([0xFF, 0xEE]))
        try handle.close()
        let result = try CofferBinary.run(["verify", "--repo", repo, "--read-data"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("pack_damaged"))
        #expect(result.stdout.contains("snapshots affected: "))
    }

    /// A wrong DB_PATH fails the backup (exit 2, naming the path and the setting) before
    /// anything is made: no new repository is left where `--repo` pointed.
    @Test func aBackupOfAMissingDatabaseCreatesNoRepository() throws {
        let scratch = try Scratch()
        let repo = scratch.child("new-repo")
        let result = try CofferBinary.run(["backup", "--repo", repo, "--db", scratch.child("no/db.sqlite"), "--media-root", scratch.child("media")])
        #expect(result.status == 2)
        #expect(result.stderr.contains("open database \(scratch.child("no/db.sqlite"))"), "\(result.stderr)")
        #expect(result.stderr.contains("DB_PATH"))
        #expect(!FileManager.default.fileExists(atPath: repo))
        // Nor in an existing one: not a file is added.
        let v = try volume(scratch)
        #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
        let before = try FileManager.default.subpathsOfDirectory(atPath: v.repo).sorted()
        let again = try CofferBinary.run(["backup", "--repo", v.repo, "--db", scratch.child("no/db.sqlite"), "--media-root", scratch.child("media")])
        #expect(again.status == 2)
        #expect(try FileManager.default.subpathsOfDirectory(atPath: v.repo).sorted() == before)
    }

    @Test func noRepositoryIsAUsageError() throws {
        let result = try CofferBinary.run(["backup", "--db", "/nonexistent/db.sqlite"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("COFFER_REPO"))
    }
}

/// Every object a backup puts in the repository is written as a temporary file in its tmp/,
/// fsynced, renamed into place, and its folder fsynced after the rename; nothing is ever
/// opened for writing under its final name. Seen from the system calls (`strace -f -y`).
@Suite struct WriteDisciplineTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "strace is missing (`make test` installs it)"))
    func everyRepositoryObjectIsSyncedRenamedAndItsFolderSynced() throws {
        let scratch = try Scratch()
        let (flags, repo) = try cliVolume(scratch, jobs: 20)
        let log = scratch.child("strace.log")
        var lines: [String] = []
        for run in 0..<2 {
            let status = try traced(["backup", "--quiet"] + flags, calls: "openat,fsync,fdatasync,rename,renameat,renameat2", log: log)
            if run == 0, status != 0, !FileManager.default.fileExists(atPath: repo + "/config.json") {
                print("skipped: strace cannot trace here (ptrace not permitted?)")
                return
            }
            #expect(status == 0)
            lines += try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
            // One more night's change, so that the second run stores something too.
            try FixtureFiles.append(PathBytes((try #require(try firstLibraryFile(under: flags[3]))).utf8), Array("more".utf8))
        }
        var committed = Set<String>()
        for (index, line) in lines.enumerated() {
            // rename, or renameat/renameat2 (AT_FDCWD, with -y its path in <>) where libc uses those.
            guard let match = line.firstMatch(of: #/^(\d+)\s+rename(?:at2?)?\((?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)", (?:AT_FDCWD(?:<[^>]*>)?, )?"([^"]+)"(?:, \w+)?\) = 0/#) else { continue }
            let (pid, temporary, final) = (String(match.1), String(match.2), String(match.3))
            guard final.hasPrefix(repo + "/") else { continue }
            #expect(temporary.hasPrefix(repo + "/tmp/"), "\(line)")
            let before = lines[..<index].filter { $0.hasPrefix(pid + " ") }
            #expect(before.contains { $0.contains("fsync(") && $0.contains("<\(temporary)>") }, "\(final) renamed before its data was synced")
            let folder = (final as NSString).deletingLastPathComponent
            let after = lines[(index + 1)...].filter { $0.hasPrefix(pid + " ") }
            #expect(after.contains { $0.contains("fsync(") && $0.contains("<\(folder)>)") }, "\(folder) not synced after \(final) was renamed into it")
            committed.insert(final)
        }
        for line in lines where line.contains("openat(") {
            for name in committed where line.contains("\"\(name)\"") {
                #expect(!line.contains("O_WRONLY") && !line.contains("O_RDWR") && !line.contains("O_CREAT"), "written in place: \(line)")
            }
        }
        // Every pack and record of the repository came in that way.
        for folder in ["packs", "snapshots"] {
            for name in try FileManager.default.contentsOfDirectory(atPath: repo + "/" + folder) {
                #expect(committed.contains(repo + "/" + folder + "/" + name), "\(folder)/\(name)")
            }
        }
        #expect(committed.count >= 5, "config.json, two packs and two records: \(committed)")
    }

    /// A dry run writes nothing into the repository, nor into /tmp: only its scratch folder
    /// beside the database (the database copy, removed after), as a backup to a bucket does.
    /// Every open for writing, folder made, rename and unlink of the run is looked at.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "strace is missing (`make test` installs it)"))
    func aDryRunWritesOnlyItsScratchBesideTheDatabase() throws {
        let scratch = try Scratch()
        let (flags, repo) = try cliVolume(scratch, jobs: 20)
        let db = flags[1], folder = (flags[1] as NSString).deletingLastPathComponent
        let log = scratch.child("strace.log")
        func listing(_ path: String) -> [String] { (FileManager.default.enumerator(atPath: path)?.allObjects as? [String] ?? []).sorted() }
        for existing in [false, true] {
            if existing { #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0) }
            let (repoBefore, folderBefore) = (listing(repo), listing(folder))
            let status = try traced(["backup", "--dry-run", "--quiet"] + flags,
                                    calls: "openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir", log: log)
            if status != 0, !existing, !FileManager.default.fileExists(atPath: log) {
                print("skipped: strace cannot trace here (ptrace not permitted?)")
                return
            }
            #expect(status == 0)
            var writes = 0
            for line in try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n") {
                guard let call = line.firstMatch(of: #/^\d+\s+(\w+)\((?:(?:AT_FDCWD|\d+)(?:<([^>]*)>)?, )?"([^"]+)"(.*)\) = \d+/#) else { continue }
                let (name, named, rest) = (String(call.1), String(call.3), String(call.4))
                // A name relative to a folder descriptor (or the working folder): -y gives its path.
                let path = named.hasPrefix("/") ? named : (call.2.map(String.init) ?? "?") + "/" + named
                if name.hasPrefix("open"), !rest.contains("O_WRONLY"), !rest.contains("O_RDWR"), !rest.contains("O_CREAT") { continue }
                writes += 1
                // The live database's own -wal and -shm are SQLite's (a reader maps the -shm);
                // the repository's lock is taken when it exists.
                func allowed(_ path: String) -> Bool {
                    path.hasPrefix(folder + "/.coffer-backup-") || path == db + "-wal" || path == db + "-shm"
                        || (existing && path == repo + "/lock")
                }
                #expect(allowed(path), "written outside the scratch: \(line)")
                // A rename's target too (its second path, absolute where Coffer renames).
                if name.hasPrefix("rename"), let target = rest.firstMatch(of: #/"([^"]+)"/#) {
                    #expect(allowed(String(target.1)), "renamed outside the scratch: \(line)")
                }
            }
            #expect(writes > 0, "the trace saw no write at all")
            #expect(listing(repo) == repoBefore)
            let sqliteOwn: Set<String> = ["db.sqlite-wal", "db.sqlite-shm"] // a reader of the live database may leave them
            #expect(listing(folder).filter { !sqliteOwn.contains($0) } == folderBefore.filter { !sqliteOwn.contains($0) },
                    "the scratch folder is removed")
        }
    }

    /// Runs coffer under `strace -f -y`, tracing the system calls `calls`, into `log`.
    func traced(_ arguments: [String], calls: String, log: String) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/strace")
        process.arguments = ["-f", "-y", "-qq", "-o", log, "-e", "trace=" + calls, CofferBinary.url.path] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    func firstLibraryFile(under mediaRoot: String) throws -> String? {
        var found: String?
        try DirectoryWalker(root: mediaRoot + "/library").walk { entry in
            if found == nil, entry.kind == .regular, PathText.isUTF8(entry.relativePath) {
                found = mediaRoot + "/library/" + PathText.display(entry.relativePath)
            }
        }
        return found
    }
}

/// A disk that fails under a backup: `read` of one media file returns EIO (injected by strace
/// into the real system call, the second read of that file); or the file ends early, as one
/// truncated while it is read does (that read returns 0).
@Suite struct FailingReadTests {
    static let strace = "/usr/bin/strace"

    /// The file is named unreadable and the run exits 1; the file is left out of the snapshot
    /// (not stored as zeros), so the next backup reads it again rather than taking the zeros
    /// for it (its path, size, mtime and inode did not change). The pack stays whole: verify
    /// reads it clean, and restore brings back every other file.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: strace), "strace is missing (`make test` installs it)"))
    func aFileThatFailsToReadIsLeftOutAndReadAgainByTheNextBackup() throws {
        try leftOutAndReadAgain(injecting: "error=EIO") { path, video, said in
            said.contains("unreadable: \(path): read failed: Input/output error after ") && said.contains(" of \(video.size) bytes; not in this snapshot")
        }
    }

    /// A file that ends before the size it had when opened (it shrank while read: here its
    /// second read returns 0, end of file) is named changed, and left out as a failing one is:
    /// no snapshot lists the zeros its entry was filled up with.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: strace), "strace is missing (`make test` installs it)"))
    func aFileThatShrinksWhileReadIsLeftOutAndReadAgainByTheNextBackup() throws {
        try leftOutAndReadAgain(injecting: "retval=0") { path, video, said in
            said.contains("changed: \(path): shrank while it was read (it ended after ") && said.contains(" of \(video.size) bytes); not in this snapshot")
        }
    }

    /// A backup whose second `read` of the largest video is replaced by `injection` (strace's
    /// `inject=read:...`) exits 1 with a message `expected` accepts, the video left out of the
    /// snapshot; verify, restore and the next backup as the tests above say.
    func leftOutAndReadAgain(injecting injection: String,
                             expected: (_ path: String, _ video: (relative: PathBytes, size: Int64), _ said: String) -> Bool) throws {
        let scratch = try Scratch()
        let (flags, repo) = try cliVolume(scratch, jobs: 30, videoSizes: VolumeSpec.testVideoSizes)
        let mediaRoot = flags[3]
        // The largest video with a plain name (strace is given its path).
        var largest: (relative: PathBytes, size: Int64)?
        try DirectoryWalker(root: mediaRoot).walk { entry in
            guard entry.kind == .regular, entry.relativePath.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }),
                  case .success(let info) = FileSystem.status(PathBytes(mediaRoot.utf8).appendingComponent(entry.relativePath)),
                  info.size > largest?.size ?? 0 else { return }
            largest = (entry.relativePath, info.size)
        }
        let video = try #require(largest)
        #expect(video.size > 1 << 20, "the volume has no video of several reads")
        let path = mediaRoot + "/" + PathText.display(video.relative)

        let failing = try CofferBinary.run(["backup"] + flags, wrapper: [
            Self.strace, "-f", "-qq", "-o", "/dev/null", "-P", path, "-e", "trace=read", "-e", "inject=read:\(injection):when=2",
        ])
        if failing.status != 1, !FileManager.default.fileExists(atPath: repo + "/config.json") {
            print("skipped: strace cannot trace here (ptrace not permitted?): \(failing.stderr)")
            return
        }
        #expect(failing.status == 1, "\(failing.stdout)\(failing.stderr)")
        let said = failing.stdout + failing.stderr
        #expect(expected(path, video, said), "\(said)")
        let repository = try Repository.open(repo)
        let first = try repository.resolve("latest")
        var listed = Set<PathBytes>()
        try repository.reader(for: first).files { listed.insert($0.path) }
        #expect(!listed.contains(video.relative), "the file was recorded with bytes it does not have")
        #expect(!listed.isEmpty)
        // Its entry, in the pack, is listed apart (the pack digest counts it).
        #expect(first.summary.dropped?.map(\.path) == [video.relative])

        let verify = try CofferBinary.run(["verify", "--repo", repo, "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        // Restored: every file of the snapshot (the video is missing, which the restored
        // volume's check reports: exit 1).
        let target = scratch.child("restored")
        let restore = try CofferBinary.run(["restore", "--repo", repo, "--db", target + "/db.sqlite", "--media-root", target + "/media",
                                            "--min-free-space-gb", "0", "--alert-free-space-gb", "0"])
        #expect(restore.status == 1, "\(restore.stdout)\(restore.stderr)")
        let restored = try TreeSnapshot(target + "/media")
        let source = try TreeSnapshot(mediaRoot) { !listed.contains($0) }
        #expect(Set(restored.items.keys) == listed)
        for (relative, item) in restored.items { #expect(source.items[relative] == item, "\(PathText.display(relative))") }

        // The next backup, on a sound disk, reads it again (it alone) and records its bytes.
        let next = try CofferBinary.run(["backup", "--json"] + flags)
        #expect(next.status == 0, "\(next.stdout)\(next.stderr)")
        #expect(try jsonObject(next.stdout)["files_added"] as? Int == 1)
        let second = try repository.resolve("latest")
        var recorded: Snapshot.File?
        try repository.reader(for: second).files { if $0.path == video.relative { recorded = $0 } }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(try #require(recorded).sha256 == Digest.hex(SHA256.hash(data: bytes)))
    }
}

/// A disk that fails to make writes durable: every `fsync` of a backup, or every `syncfs` of a
/// restore, returns EIO (injected by strace into the real system calls). The run fails (exit 2)
/// naming what it could not sync, and nothing it wrote is taken for whole: no snapshot, no
/// restored target.
@Suite struct FailingSyncTests {
    static let strace = "/usr/bin/strace"

    func snapshotIDs(_ repo: String) throws -> [String] { try Repository.open(repo).snapshots().snapshots.map(\.id) }

    /// Whether strace can trace here (a container may forbid ptrace): asked apart, so that a
    /// run that ignores the injected error fails the test instead of passing for a skip.
    static func straceWorks() -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: strace)
        process.arguments = ["-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync", "-e", "inject=fsync:error=EIO", "/bin/true"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    /// A volume in `scratch`, backed up once; nil (saying so) where strace cannot trace.
    func backedUpVolume(in scratch: Scratch) throws -> (flags: [String], repo: String)? {
        guard Self.straceWorks() else {
            print("skipped: strace cannot trace here (ptrace not permitted?)")
            return nil
        }
        let volume = try cliVolume(scratch, jobs: 30, videoSizes: VolumeSpec.testVideoSizes)
        #expect(try CofferBinary.run(["backup", "--quiet"] + volume.flags).status == 0)
        return volume
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: strace), "strace is missing (`make test` installs it)"))
    func aBackupWhoseFsyncFailsCommitsNothing() throws {
        let scratch = try Scratch()
        guard let (flags, repo) = try backedUpVolume(in: scratch) else { return }
        let before = try snapshotIDs(repo)
        let failing = try CofferBinary.run(["backup", "--full"] + flags, wrapper: [
            Self.strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync,fdatasync", "-e", "inject=fsync,fdatasync:error=EIO",
        ])
        #expect(failing.status == 2, "\(failing.stdout)\(failing.stderr)")
        #expect(failing.stderr.contains("error: ") && failing.stderr.contains("Input/output error") && failing.stderr.contains(repo), "\(failing.stderr)")
        #expect(failing.stderr.contains("hint: the disk or filesystem reported an error: check it (`dmesg`"), "\(failing.stderr)")
        // The earlier snapshot alone, whole; the failed run's pack is not published.
        #expect(try snapshotIDs(repo) == before)
        let packs = try FileManager.default.contentsOfDirectory(atPath: repo + "/packs")
        #expect(packs.count == 1, "\(packs)")
        let verify = try CofferBinary.run(["verify", "--repo", repo, "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        // On a sound disk the next run succeeds and leaves nothing of the failed one in tmp/.
        let next = try CofferBinary.run(["backup", "--quiet", "--full"] + flags)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(try snapshotIDs(repo).count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/tmp").isEmpty)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: strace), "strace is missing (`make test` installs it)"))
    func aRestoreWhoseSyncFailsLeavesNoTarget() throws {
        let scratch = try Scratch()
        guard let (flags, repo) = try backedUpVolume(in: scratch) else { return }
        let target = scratch.child("restored")
        let failing = try CofferBinary.run(["restore", "--repo", repo, "--db", target + "/data/db.sqlite", "--media-root", target + "/media",
                                            "--min-free-space-gb", "0", "--alert-free-space-gb", "0"], wrapper: [
            Self.strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=syncfs,fsync,fdatasync", "-e", "inject=syncfs,fsync,fdatasync:error=EIO",
        ])
        #expect(failing.status == 2, "\(failing.stdout)\(failing.stderr)")
        #expect(failing.stderr.contains("Input/output error"), "\(failing.stderr)")
        // Neither target, nor any staging folder, is left.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: target + "/data")) ?? []
        #expect(!left.contains("db.sqlite"), "\(left)")
        #expect(!FileManager.default.fileExists(atPath: target + "/media"))
        let hidden = ((try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []) + left
        #expect(!hidden.contains { $0.hasPrefix(".coffer-") }, "\(hidden)")
    }
}
