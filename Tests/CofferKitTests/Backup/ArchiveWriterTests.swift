@testable import CofferKit
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ArchiveWriterTests {
    static let names: [PathBytes] = [
        PathBytes("media/library/plain.mkv".utf8),
        PathBytes("media/library/Cafe\u{0301} decomposed.mkv".utf8), // NFD
        PathBytes("media/library/Café composed.mkv".utf8),            // NFC
        PathBytes("media/library/raw-".utf8) + [0xFF, 0xFE] + PathBytes(".webm".utf8),
    ]

    /// Names that are not plain ASCII keep their exact bytes whatever the locale of the thread
    /// that writes them; plain ASCII names cost no extended header.
    @Test func namesKeepTheirBytesUnderAUTF8Locale() throws {
        guard let utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil) else {
            print("skipped: the C.UTF-8 locale is not available")
            return
        }
        defer { freelocale(utf8) }
        try writeAndReadBack(under: utf8)
    }

    /// Under a Latin-1 locale libarchive would take "é" (C3 A9) for two Latin-1 characters and
    /// store four bytes of UTF-8 for them.
    @Test func namesKeepTheirBytesUnderALatin1Locale() throws {
        let dir = try TemporaryDirectory()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/localedef"),
              FileManager.default.fileExists(atPath: "/usr/share/i18n/locales/en_US"),
              try run(["/usr/bin/localedef", "-i", "en_US", "-f", "ISO-8859-1", dir.path + "/en_US.ISO-8859-1"]) == 0 else {
            print("skipped: localedef or the en_US locale source is not installed (Debian: libc-bin, locales)")
            return
        }
        setenv("LOCPATH", dir.path, 1)
        let latin1 = newlocale(LC_CTYPE_MASK, "en_US.ISO-8859-1", nil)
        unsetenv("LOCPATH")
        guard let latin1 else { Issue.record("the generated locale did not load"); return }
        defer { freelocale(latin1) }
        try writeAndReadBack(under: latin1)
    }

    func writeAndReadBack(under locale: locale_t) throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/names.tar"
        let names = Self.names
        let previous = uselocale(locale)
        var offsets: [Int64] = []
        do {
            defer { uselocale(previous) }
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            #expect(fd >= 0)
            defer { close(fd) }
            let writer = try ArchiveWriter(fd: fd, path: path)
            for name in names {
                offsets.append(try writer.beginFile(path: name, size: 3, mode: 0o644, modified: 1_700_000_000.25))
                try writer.write("abc", count: 3)
                try writer.endFile()
            }
            let size = try writer.finish().size
            // Everything reached the file, gathered writes included.
            #expect(size == (try FileSystem.status(path).get().size))
        }
        // The ASCII name: one ustar header, its data right after it (no pax header, and the
        // mtime's fraction left to the snapshot record).
        #expect(offsets[0] == 512)
        #expect(offsets[2] - offsets[1] > 1024) // the others carry an extended header

        let reader = try ArchiveReader(path: path, kind: .tar)
        var read: [PathBytes] = []
        while let entry = try reader.next() {
            read.append(entry.path)
            #expect(entry.modified == 1_700_000_000)
        }
        #expect(read == names)
    }

    /// Entries nobody reads are passed over by seeking: a reader that wants one file out of a
    /// pack does not read the others' bytes. A truncated archive still fails at its end.
    @Test func unreadEntriesAreSkippedBySeeking() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/skip.tar"
        let big = 4 << 20
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: big, alignment: 64)
        defer { payload.deallocate() }
        for i in 0..<big { payload[i] = UInt8(truncatingIfNeeded: i &* 31) }
        do {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            defer { close(fd) }
            let writer = try ArchiveWriter(fd: fd, path: path)
            for name in ["media/library/a.bin", "media/library/b.bin", "media/library/c.txt"] {
                let size = name.hasSuffix(".bin") ? big : 3
                _ = try writer.beginFile(path: PathBytes(name.utf8), size: Int64(size), mode: 0o644, modified: 1_700_000_000)
                if size == 3 { try writer.write("xyz", count: 3) } else { try writer.write(UnsafeRawPointer(payload.baseAddress!), count: size) }
                try writer.endFile()
            }
            _ = try writer.finish()
        }
        func readLast(_ path: String) throws -> (String, Int64) {
            let reader = try ArchiveReader(path: path, kind: .tar)
            var text = ""
            while let entry = try reader.next() {
                guard entry.path == PathBytes("media/library/c.txt".utf8) else { continue }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
                defer { buffer.deallocate() }
                let n = try reader.read(into: buffer)
                text = String(decoding: buffer[0..<n], as: UTF8.self)
            }
            return (text, reader.bytesSkipped)
        }
        let (text, skipped) = try readLast(path)
        #expect(text == "xyz")
        // Most of the two 4 MiB entries were seeked over (libarchive reads what it buffered).
        #expect(skipped >= Int64(2 * big - (2 << 20)))

        // Cut inside the second big entry: the seek lands past the end, the next header read fails.
        let cut = dir.path + "/cut.tar"
        #expect(copyfile(path, cut, length: 512 + big + 512 + big / 2))
        #expect(throws: CofferError.self) { _ = try readLast(cut) }
    }

    /// Pieces of half a megabyte or more go to the file at once, the smaller ones are gathered
    /// first: a large piece must land after the gathered bytes that came before it (a header, a
    /// run of small files), never before them. Every entry's bytes are read back where its
    /// offset says, and through libarchive.
    @Test func largePiecesLandAfterTheBytesGatheredBeforeThem() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/order.tar"
        // (name, size, the sizes of the writes its data is handed over in)
        let plan: [(String, Int, [Int])] = [
            ("a.txt", 3, [3]),
            ("b.bin", 600 << 10, [600 << 10]),                   // one piece over half a megabyte
            ("c.txt", 5, [5]),
            ("d.txt", 700, [700]),
            ("e.bin", 900 << 10, [700 << 10, 200 << 10]),
            ("f.bin", 3 << 20, [768 << 10, 768 << 10, 1536 << 10]),
            ("g.txt", 1, [1]),
            ("h.bin", (512 << 10) + 1, [512 << 10, 1]),
        ]
        func byte(_ entry: Int, _ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 131 &+ entry &* 7 &+ 1) }
        let largest = plan.map(\.1).max()!
        let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: largest, alignment: 64)
        defer { payload.deallocate() }
        var offsets: [Int64] = []
        do {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            #expect(fd >= 0)
            defer { close(fd) }
            let writer = try ArchiveWriter(fd: fd, path: path)
            for (index, (name, size, pieces)) in plan.enumerated() {
                for i in 0..<size { payload[i] = byte(index, i) }
                offsets.append(try writer.beginFile(path: PathBytes("media/library/\(name)".utf8), size: Int64(size), mode: 0o644, modified: 1_700_000_000))
                var done = 0
                for piece in pieces {
                    try writer.write(UnsafeRawPointer(payload.baseAddress! + done), count: piece)
                    done += piece
                }
                try writer.endFile()
            }
            _ = try writer.finish()
        }
        let bytes = try #require(FileManager.default.contents(atPath: path))
        for (index, (name, size, _)) in plan.enumerated() {
            let at = Int(offsets[index])
            // The entry's own header right before its data, and the data where the offset says.
            #expect(bytes[at - 512..<at - 512 + 14 + name.count].elementsEqual(PathBytes("media/library/\(name)".utf8)), "\(name): header")
            #expect(bytes[at..<at + size].elementsEqual((0..<size).lazy.map { byte(index, $0) }), "\(name): data")
        }
        let reader = try ArchiveReader(path: path, kind: .tar)
        var index = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
        defer { buffer.deallocate() }
        while let entry = try reader.next() {
            #expect(entry.path == PathBytes("media/library/\(plan[index].0)".utf8))
            var read = 0
            var same = true
            while true {
                let n = try reader.read(into: buffer)
                if n == 0 { break }
                for i in 0..<n where buffer[i] != byte(index, read + i) { same = false }
                read += n
            }
            #expect(read == plan[index].1 && same, "\(plan[index].0)")
            index += 1
        }
        #expect(index == plan.count)
    }

    private func copyfile(_ from: String, _ to: String, length: Int) -> Bool {
        guard let data = FileManager.default.contents(atPath: from) else { return false }
        return FileManager.default.createFile(atPath: to, contents: data.prefix(length))
    }

    private func run(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
