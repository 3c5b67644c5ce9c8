import CofferFixtures
import CofferKit
import Foundation
import Testing

/// `verify` copes with a production-sized volume: 100,000 jobs and about 100,000 files, without
/// reading file contents. (Its speed and memory are measured by the benchmark harness, not here.)
@Suite struct ScaleTests {
    @Test func verifiesOneHundredThousandJobsAndFiles() throws {
        // On tmpfs when the machine has one: creating 100,000 inodes is what takes time here.
        let shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : nil
        let volume = try TestVolume(jobs: 100_000, seed: 11, hostile: true, maxFileBytes: 16, base: shm)
        #expect(volume.generated.files > 95_000)
        let clean = try volume.verify()
        #expect(clean.findings.isEmpty, "\(clean.findingList.prefix(2000))")
        #expect(clean.counts.jobs == 100_000)
        #expect(clean.counts.libraryFiles == volume.generated.completeJobIDs.count)

        let planted = try ProblemPlanter.plantAll(in: volume.generated)
        let damaged = try volume.verify()
        #expect(damaged.findings.count == planted.count, "\(damaged.findingList)")
    }
}
