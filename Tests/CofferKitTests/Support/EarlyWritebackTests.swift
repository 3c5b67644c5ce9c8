import CLinux
import CofferFixtures
@testable import CofferKit
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The writeback started while a pack or a restored file is written: every byte once, in
/// order, a window at a time, and small files left to the final sync.
@Suite struct EarlyWritebackTests {
    /// Writes `pieces` to a real file through the writeback and returns the ranges it started.
    func ranges(writing pieces: [Int], in folder: TemporaryDirectory) throws -> (started: [Range<Int64>], total: Int64) {
        let path = folder.child("file-\(pieces.count)-\(pieces.first ?? 0)")
        let fd = try RawIO.createNew(path)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: pieces.max() ?? 1, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 7)
        var writeback = EarlyWriteback()
        var started: [Range<Int64>] = []
        for piece in pieces {
            try RawIO.writeAll(fd, buffer.baseAddress!, piece, path: path)
            if let range = writeback.wrote(piece, fd: fd) { started.append(range) }
        }
        if let range = writeback.finish(fd: fd) { started.append(range) }
        try RawIO.sync(fd, path: path)
        return (started, Int64(pieces.reduce(0, +)))
    }

    @Test func coversEveryByteOnceInWindows() throws {
        let folder = try TemporaryDirectory()
        // 20.5 MiB in pieces of 1 MiB and odd sizes, as the pack writer's gathered writes come.
        let pieces = Array(repeating: 1 << 20, count: 20) + [333, 1 << 19, 4_095]
        let (started, total) = try ranges(writing: pieces, in: folder)
        #expect(started.first?.lowerBound == 0)
        #expect(started.last?.upperBound == total)
        for (earlier, later) in zip(started, started.dropFirst()) { #expect(earlier.upperBound == later.lowerBound) }
        #expect(started.dropLast().allSatisfy { $0.count >= EarlyWriteback.window && $0.count < EarlyWriteback.window + (1 << 20) })
        #expect(started.count == 3) // two whole windows, then the rest at the end
    }

    @Test func leavesSmallFilesToTheFinalSync() throws {
        let folder = try TemporaryDirectory()
        #expect(try ranges(writing: [16], in: folder).started.isEmpty)
        #expect(try ranges(writing: [Int(EarlyWriteback.smallestFile) - 1], in: folder).started.isEmpty)
        #expect(try ranges(writing: [Int(EarlyWriteback.smallestFile)], in: folder).started == [0..<EarlyWriteback.smallestFile])
    }

    /// A restore's tree of small files: a syncfs per ``BackgroundSync/threshold`` bytes written,
    /// each file counted as at least a block, never two at once.
    @Test func syncsTheFilesystemAsFilesAccumulate() throws {
        let folder = try TemporaryDirectory()
        let sync = try FilesystemSync(folder.path)
        let background = BackgroundSync(fd: sync.fd)
        let files = Int(BackgroundSync.threshold / BackgroundSync.blockSize)
        for _ in 0..<(files - 1) { background.wrote(16) }
        #expect(background.started == 0)
        background.wrote(16)
        #expect(background.started == 1)
        background.wait()
        background.wrote(BackgroundSync.threshold - 1)
        #expect(background.started == 1)
        background.wrote(1)
        #expect(background.started == 2)
        background.wait()
        try sync.sync()
    }

    #if os(Linux)
    /// A pack's writeback drops what reached the disk from the page cache, a few windows
    /// behind the writer: after 96 MiB, the first 32 MiB are no longer in memory. Without it
    /// every page just written is. The same through a local repository's pending object, as
    /// a backup writes its pack. (Not on tmpfs, whose pages are the storage itself.)
    @Test func aPackLeavesThePageCacheBehindIt() throws {
        func inMemory(_ path: String) throws -> Bool {
            let type = try runScript("/usr/bin/stat", ["-f", "-c", "%T", path]).1.trimmingCharacters(in: .whitespacesAndNewlines)
            return type == "tmpfs" || type == "ramfs"
        }
        // Where /tmp is a tmpfs (a CI machine), the package's own .build folder, on its disk.
        var folder = try TemporaryDirectory()
        if try inMemory(folder.path) {
            let build = FileManager.default.currentDirectoryPath + "/.build"
            guard FileManager.default.fileExists(atPath: build) else {
                print("skipped: TMPDIR is in memory (tmpfs), whose pages cannot be dropped, and there is no .build folder here")
                return
            }
            folder = try TemporaryDirectory(base: build)
            guard try !inMemory(folder.path) else {
                print("skipped: \(folder.path) and TMPDIR are in memory (tmpfs), whose pages cannot be dropped")
                return
            }
        }
        let piece = 1 << 20, pieces = 96
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 9)
        /// The share of the file's first third, and of its last twelfth, in the page cache.
        func residentShare(_ path: String) throws -> (head: Double, tail: Double) {
            let length = pieces * piece
            let reader = open(path, O_RDONLY)
            defer { close(reader) }
            let map = mmap(nil, length, PROT_READ, MAP_SHARED, reader, 0)
            try #require(map != MAP_FAILED && map != nil)
            defer { munmap(map, length) }
            let pages = length / Int(getpagesize())
            var resident = [UInt8](repeating: 0, count: pages)
            #expect(mincore(map, length, &resident) == 0)
            func share(_ range: Range<Int>) -> Double { Double(resident[range].filter { $0 & 1 == 1 }.count) / Double(range.count) }
            return (share(0..<(pages / 3)), share((pages - pages / 12)..<pages))
        }
        func write(dropping: Bool) throws -> (head: Double, tail: Double) {
            let path = folder.child("pack-\(dropping)")
            let fd = try RawIO.createNew(path)
            defer { close(fd) }
            var writeback = EarlyWriteback(dropsBehind: dropping)
            for _ in 0..<pieces {
                try RawIO.writeAll(fd, buffer.baseAddress!, piece, path: path)
                writeback.wrote(piece, fd: fd)
            }
            #expect(writeback.failure == nil)
            return try residentShare(path)
        }
        let kept = try write(dropping: false)
        let dropped = try write(dropping: true)
        #expect(kept.head > 0.9, "\(kept)")
        #expect(dropped.head < 0.1, "\(dropped)")
        #expect(dropped.tail > 0.9, "the last windows are still being written: \(dropped)")

        let storage = LocalStorage(root: folder.child("repo"))
        try FileManager.default.createDirectory(atPath: storage.temporaryDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: storage.root + "/packs", withIntermediateDirectories: true)
        let pending = try storage.create("packs/p.tar")
        for _ in 0..<pieces { try pending.write(UnsafeRawBufferPointer(buffer)) }
        try storage.commit(pending)
        let pack = try residentShare(storage.root + "/packs/p.tar")
        #expect(pack.head < 0.1, "\(pack)")

        // A write error the disk reported while a window was waited for (EIO) fails the
        // commit, though the fsync would not report it again: nothing is published.
        let failing = try storage.create("packs/q.tar")
        try failing.write(UnsafeRawBufferPointer(buffer))
        (failing as! LocalPendingObject).writeback.noteFailure(EIO)
        let error = #expect(throws: CofferError.self) { try storage.commit(failing) }
        #expect(error?.errno == EIO)
        storage.discard(failing)
        #expect(!FileManager.default.fileExists(atPath: storage.root + "/packs/q.tar"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: storage.temporaryDirectory).isEmpty)
    }

    /// The C wrappers reach the kernel: success on a file, the kernel's own error on a pipe.
    @Test func theLinuxCallsAnswer() throws {
        let folder = try TemporaryDirectory()
        let fd = try RawIO.createNew(folder.child("f"))
        defer { close(fd) }
        #expect(coffer_start_writeback(fd, 0, 0) == 0)
        #expect(coffer_drop_written(fd, 0, 0) == 0)
        #expect(coffer_syncfs(fd) == 0)
        var pipe: [Int32] = [0, 0]
        #expect(Glibc.pipe(&pipe) == 0)
        defer { close(pipe[0]); close(pipe[1]) }
        let result = coffer_start_writeback(pipe[1], 0, 0)
        let code = errno
        #expect(result == -1)
        #expect(code == ESPIPE)
        // Where waiting does not apply (a pipe), nothing was learned: no failure.
        #expect(coffer_drop_written(pipe[1], 0, 0) == 0)
    }
    #endif
}
