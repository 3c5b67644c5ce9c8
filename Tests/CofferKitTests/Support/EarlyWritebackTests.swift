import CLinux
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
    /// The C wrappers reach the kernel: success on a file, the kernel's own error on a pipe.
    @Test func theLinuxCallsAnswer() throws {
        let folder = try TemporaryDirectory()
        let fd = try RawIO.createNew(folder.child("f"))
        defer { close(fd) }
        #expect(coffer_start_writeback(fd, 0, 0) == 0)
        #expect(coffer_syncfs(fd) == 0)
        var pipe: [Int32] = [0, 0]
        #expect(Glibc.pipe(&pipe) == 0)
        defer { close(pipe[0]); close(pipe[1]) }
        let result = coffer_start_writeback(pipe[1], 0, 0)
        let code = errno
        #expect(result == -1)
        #expect(code == ESPIPE)
    }
    #endif
}
