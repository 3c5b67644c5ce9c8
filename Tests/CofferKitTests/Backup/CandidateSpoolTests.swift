@testable import CofferKit
import Foundation
import Testing

@Suite struct CandidateSpoolTests {
    /// Candidates come back exactly, in order, across the spool's 1 MiB write and read chunks
    /// (paths up to 4 KiB long straddle them), with and without reuse entries.
    @Test func candidatesRoundTripAcrossChunks() throws {
        let directory = try TemporaryDirectory()
        let spool = try CandidateSpool(in: directory.path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty, "the scratch file is unlinked at once")
        var random = SystemRandomNumberGenerator()
        var written: [BackupRunner.Candidate] = []
        for index in 0..<8_000 {
            let length = index % 97 == 0 ? 4000 : Int.random(in: 1...300, using: &random)
            let path = (0..<length).map { _ in UInt8.random(in: 1...255, using: &random) }
            var candidate = BackupRunner.Candidate(
                relative: path,
                info: FileInfo(kind: .regular, size: Int64.random(in: 0...(1 << 40), using: &random), mode: 0o100644,
                               modified: Double.random(in: 0...2e9, using: &random), inode: UInt64.random(in: 0...UInt64.max, using: &random)))
            if index % 3 == 0 {
                var digest = SHA256Value(hex: "")
                digest.a = .random(in: 0...UInt64.max); digest.b = .random(in: 0...UInt64.max)
                digest.c = .random(in: 0...UInt64.max); digest.d = .random(in: 0...UInt64.max)
                candidate.reuse = BackupRunner.Reuse(sha256: digest, pack: Int32(index % 7), offset: Int64(index) * 512, mode: 0o644)
            }
            written.append(candidate)
            try spool.append(candidate)
        }
        try spool.rewind()
        var read = 0
        while let candidate = try spool.next() {
            let expected = written[read]
            #expect(candidate.relative == expected.relative)
            #expect(candidate.info == expected.info)
            #expect(candidate.reuse?.sha256 == expected.reuse?.sha256)
            #expect(candidate.reuse?.pack == expected.reuse?.pack && candidate.reuse?.offset == expected.reuse?.offset)
            #expect(candidate.reuse?.mode == expected.reuse?.mode)
            read += 1
        }
        #expect(read == written.count)
    }
}
