@testable import CofferKit
import Foundation
import Testing

@Suite struct MediaPrefetchTests {
    /// The candidates come back in order; each file to read with a descriptor of that very file
    /// (or minus the errno of its opening), an unchanged one (reused) without any. No more than
    /// `depth` files are held open ahead, and those not taken are closed with the prefetcher.
    @Test func candidatesComeInOrderWithTheirFilesOpenAndNoneLeftOpen() throws {
        let directory = try TemporaryDirectory()
        let root = directory.child("media")
        #expect(mkdir(root, 0o755) == 0 && mkdir(root + "/a", 0o755) == 0 && mkdir(root + "/b", 0o755) == 0)
        let count = MediaPrefetch.depth * 3
        var candidates: [BackupRunner.Candidate] = []
        for index in 0..<count {
            let relative = (index < count / 2 ? "a/" : "b/") + String(format: "%05d", index)
            let info = FileInfo(kind: .regular, size: 6, mode: 0o644, modified: 0, inode: 0)
            var candidate = BackupRunner.Candidate(relative: PathBytes(relative.utf8), info: info)
            switch index % 10 {
            case 3: candidate.reuse = .init(sha256: SHA256Value(Array(repeating: 0, count: 32)), pack: 0, offset: 0, mode: 0o644)
            case 7: break // never written: missing
            default: try Data(String(format: "%05d\n", index).utf8).write(to: URL(fileURLWithPath: root + "/" + relative))
            }
            candidates.append(candidate)
        }
        /// Descriptors of this process open on a file under `root`.
        func openUnderRoot() -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.filter {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0))?.hasPrefix(root + "/") == true
            }.count ?? 0
        }
        var taken = 0
        do {
            var source = candidates.makeIterator()
            let files = MediaPrefetch(root: PathBytes(root.utf8)) { source.next() }
            while taken < count - 10, let opened = try files.next() {
                let index = taken
                #expect(opened.candidate.relative == candidates[index].relative)
                switch index % 10 {
                case 3:
                    #expect(opened.descriptor == 0)
                case 7:
                    #expect(opened.descriptor == -ENOENT)
                default:
                    var buffer = [UInt8](repeating: 0, count: 16)
                    let n = read(opened.descriptor, &buffer, buffer.count)
                    #expect(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self) == String(format: "%05d\n", index))
                    close(opened.descriptor)
                }
                #expect(openUnderRoot() <= MediaPrefetch.depth + 1) // the folder's own
                taken += 1
            }
            withExtendedLifetime(files) { #expect(openUnderRoot() > 0) } // the files ahead
        }
        #expect(taken == count - 10)
        #expect(openUnderRoot() == 0)
    }
}
