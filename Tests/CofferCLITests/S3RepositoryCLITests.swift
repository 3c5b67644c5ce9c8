@testable import CofferKit
import CofferFixtures
import Foundation
import Testing

/// The commands with `--repo s3://BUCKET/PREFIX`, against the S3-compatible server `make test`
/// starts on loopback (skipped, with the reason printed, when there is none).
@Suite struct S3RepositoryCLITests {
    static let secret = TestObjectStore.openSecret
    static let token = TestObjectStore.openToken

    /// The AWS environment of a fresh bucket, or `nil` (skipped). On the server that checks
    /// signatures, with its key.
    static func bucket(_ test: String = #function, server: TestObjectStore = .open) throws -> (environment: [String: String], bucket: String)? {
        guard let (endpoint, credentials) = server.server else {
            print(server.skipped(test))
            return nil
        }
        var environment = ["AWS_ACCESS_KEY_ID": credentials.accessKeyID, "AWS_SECRET_ACCESS_KEY": credentials.secretAccessKey,
                           "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"]
        environment["AWS_SESSION_TOKEN"] = credentials.sessionToken
        let bucket = "coffer-cli-\(UInt32.random(in: 0...UInt32.max))"
        let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(environment),
                              credentials: ObjectStoreCredentials.fromEnvironment(environment)!)
        try client.createBucket()
        return (environment, bucket)
    }

    /// `flags` with the value of `--repo` replaced by `repo`.
    static func pointing(_ flags: [String], at repo: String) -> [String] {
        flags.enumerated().map { $0.offset > 0 && flags[$0.offset - 1] == "--repo" ? repo : $0.element }
    }

    static func expectNoCredentials(_ result: CofferBinary.Result, _ step: String, _ environment: [String: String] = [:]) {
        let hidden = [secret, token] + [environment["AWS_SECRET_ACCESS_KEY"], environment["AWS_SESSION_TOKEN"]].compactMap { $0 }
        for text in [result.stdout, result.stderr] {
            #expect(!hidden.contains { text.contains($0) }, "\(step) printed a credential")
        }
    }

    /// Every command, on a server that takes any credentials and on one that checks each
    /// request's signature.
    @Test(arguments: TestObjectStore.allCases)
    func everyRepositoryCommandWorksOnABucket(_ server: TestObjectStore) throws {
        guard let (environment, bucket) = try Self.bucket(server: server) else { return }
        let scratch = try Scratch()
        let (local, _) = try cliVolume(scratch, jobs: 30, videoSizes: VolumeSpec.testVideoSizes)
        let repo = "s3://\(bucket)/coffer/main"
        let flags = Self.pointing(local, at: repo)
        func run(_ arguments: [String], _ step: String) throws -> CofferBinary.Result {
            let result = try CofferBinary.run(arguments, environment: environment)
            Self.expectNoCredentials(result, step, environment)
            return result
        }

        let metrics = scratch.child("metrics/coffer.prom")
        try FileManager.default.createDirectory(atPath: scratch.child("metrics"), withIntermediateDirectories: true)
        let first = try run(["backup", "--verbose", "--tag", "nightly", "--metrics-file", metrics] + flags, "backup")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("saved in \(repo)"), "\(first.stdout)")
        let second = try run(["backup", "--json"] + flags, "second backup")
        #expect(second.status == 0, "\(second.stderr)")
        #expect(try jsonObject(second.stdout)["bytes_read"] as? Int == 0)

        let list = try run(["snapshots", "--repo", repo, "--json"], "snapshots")
        let snapshots = try #require(try jsonObject(list.stdout)["snapshots"] as? [[String: Any]])
        #expect(snapshots.count == 2)
        #expect(snapshots[0]["tags"] as? [String] == ["nightly"])

        let verify = try run(["verify", "--repo", repo, "--read-data", "--metrics-file", metrics], "verify")
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        #expect(verify.stdout.contains("no findings"))

        let target = ["--db", scratch.child("new/db.sqlite"), "--media-root", scratch.child("new/media"), "--repo", repo,
                      "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        let restore = try run(["restore", "--json"] + target, "restore")
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect((try jsonObject(restore.stdout)["verify"] as? [String: Any])?["exit_code"] as? Int == 0)

        let prune = try run(["prune", "--keep-last", "1"] + flags, "prune")
        #expect(prune.status == 0, "\(prune.stdout)\(prune.stderr)")
        let after = try run(["snapshots", "--repo", repo, "--json"], "snapshots after prune")
        #expect((try jsonObject(after.stdout)["snapshots"] as? [[String: Any]])?.count == 1)
        #expect(try run(["verify", "--repo", repo, "--read-data"], "verify after prune").status == 0)

        let drill = try run(["drill", "--json", "--metrics-file", metrics] + flags, "drill")
        #expect(drill.status == 0, "\(drill.stdout)\(drill.stderr)")
        // The metrics name the repository by its address, never by its credentials.
        let exported = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(exported.contains("repository=\"\(repo)\""), "\(exported)")
        for hidden in [environment["AWS_SECRET_ACCESS_KEY"], environment["AWS_SESSION_TOKEN"]].compactMap({ $0 }) {
            #expect(!exported.contains(hidden), "the metrics file carries a credential")
        }

        // An upgrade snapshots into the bucket first.
        let up = try run(["migrate", "up"] + flags, "migrate up")
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        let tagged = try run(["snapshots", "--repo", repo, "--json"], "snapshots after migrate")
        let last = try #require((try jsonObject(tagged.stdout)["snapshots"] as? [[String: Any]])?.last)
        #expect(last["tags"] as? [String] == ["pre-migrate"], "\(last)")

        // The scratch folder the backups made beside the database is gone.
        let beside = try FileManager.default.contentsOfDirectory(atPath: scratch.child("v"))
        #expect(!beside.contains { $0.hasPrefix(".coffer-backup-") }, "\(beside)")
    }

    /// A repository copied object by object between a directory and a bucket (as `rclone copy`
    /// or `aws s3 sync` would) is the same repository: it verifies every byte both ways, and a
    /// backup continues the chain.
    @Test func aRepositoryCopiedBetweenADirectoryAndABucketStillVerifies() throws {
        guard let (environment, bucket) = try Self.bucket() else { return }
        let scratch = try Scratch()
        let (flags, directory) = try cliVolume(scratch, jobs: 20)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(environment),
                              credentials: ObjectStoreCredentials.fromEnvironment(environment)!)
        // Directory → bucket: every object but the lock file and tmp/.
        let root = URL(fileURLWithPath: directory)
        let files = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey])!
            .compactMap { $0 as? URL }.filter { (try? $0.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true }
        var copied = 0
        for file in files {
            let name = String(file.resolvingSymlinksInPath().path.dropFirst(root.resolvingSymlinksInPath().path.count + 1))
            guard name != "lock", !name.hasPrefix("tmp/") else { continue }
            try client.putObject("copied/" + name, body: try Data(contentsOf: file))
            copied += 1
        }
        #expect(copied >= 3)
        let inBucket = "s3://\(bucket)/copied"
        let verify = try CofferBinary.run(["verify", "--repo", inBucket, "--read-data"], environment: environment)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let bucketFlags = Self.pointing(flags, at: inBucket)
        #expect(try CofferBinary.run(["backup", "--quiet"] + bucketFlags, environment: environment).status == 0)

        // Bucket → directory: every object but the locks, and an empty tmp/.
        let back = scratch.child("back")
        for object in try client.listObjects(prefix: "copied/") where !object.key.hasPrefix("copied/locks/") {
            let path = back + "/" + object.key.dropFirst("copied/".count)
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: path, contents: try client.getObject(object.key)))
        }
        try FileManager.default.createDirectory(atPath: back + "/tmp", withIntermediateDirectories: true)
        let local = try CofferBinary.run(["verify", "--repo", back, "--read-data", "--json"])
        #expect(local.status == 0, "\(local.stdout)\(local.stderr)")
        #expect(try CofferBinary.run(["snapshots", "--repo", back]).stdout.contains("2 snapshot(s)"))
    }

    /// Bad addresses and missing credentials are usage errors that say what to set; a bucket
    /// that is not there is named. Nothing of the credentials shows.
    @Test func mistakesGetClearErrors() throws {
        guard let (environment, _) = try Self.bucket() else { return }
        let noKeys = environment.filter { !$0.key.hasPrefix("AWS_ACCESS") && !$0.key.hasPrefix("AWS_SECRET") }
        let missing = try CofferBinary.run(["snapshots", "--repo", "s3://some-bucket/x"], environment: noKeys)
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("AWS_ACCESS_KEY_ID"), "\(missing.stderr)")
        let badName = try CofferBinary.run(["snapshots", "--repo", "s3://Bad_Bucket/x"], environment: environment)
        #expect(badName.status == 64)
        #expect(badName.stderr.contains("not a bucket name"), "\(badName.stderr)")
        let noBucket = try CofferBinary.run(["snapshots", "--repo", "s3://coffer-no-such-bucket-here/x"], environment: environment)
        #expect(noBucket.status == 2)
        #expect(noBucket.stderr.contains("s3://coffer-no-such-bucket-here") && noBucket.stderr.contains("no such bucket"), "\(noBucket.stderr)")
        for result in [missing, badName, noBucket] { Self.expectNoCredentials(result, "error") }
    }

    /// On a store that checks signatures: a wrong secret exits 64 naming the variables to
    /// check, writes nothing, and prints no secret.
    @Test func refusedCredentialsExitAsUsageErrors() throws {
        guard let (environment, bucket) = try Self.bucket(server: .signed) else { return }
        let scratch = try Scratch()
        let (local, _) = try cliVolume(scratch, jobs: 5)
        let flags = Self.pointing(local, at: "s3://\(bucket)/coffer")
        var wrong = environment
        wrong["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-never-printed"
        for arguments in [["backup"] + flags, ["snapshots", "--repo", "s3://\(bucket)/coffer"]] {
            let refused = try CofferBinary.run(arguments, environment: wrong)
            #expect(refused.status == 64, "\(refused.stderr)")
            #expect(refused.stderr.contains("refused the credentials") && refused.stderr.contains("AWS_SECRET_ACCESS_KEY"), "\(refused.stderr)")
            Self.expectNoCredentials(refused, arguments[0], wrong)
        }
        // Nothing was written.
        let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(environment), credentials: ObjectStoreCredentials.fromEnvironment(environment)!)
        #expect(try client.listObjects(prefix: "").isEmpty)
    }

    /// A backup killed mid-upload leaves no listed snapshot, and its lock (this host, a process
    /// that is gone) does not stop the next run, which abandons the killed run's unfinished
    /// multipart upload.
    @Test func aKilledUploadLeavesNoSnapshotAndNoLockInTheWay() throws {
        guard let (environment, bucket) = try Self.bucket() else { return }
        let scratch = try Scratch()
        let (local, _) = try cliVolume(scratch, jobs: 60)
        let repo = "s3://\(bucket)/killed"
        let flags = Self.pointing(local, at: repo)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags, environment: environment).status == 0)
        // New content larger than a part, so the killed backup has a multipart upload going.
        try Data(repeating: 7, count: 20 << 20).write(to: URL(fileURLWithPath: scratch.child("v/media/library/large.bin")))
        let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(environment),
                              credentials: ObjectStoreCredentials.fromEnvironment(environment)!)

        let process = try CofferBinary.start(["backup", "--quiet", "--full"] + flags,
                                             environment: ["COFFER_TEST_CHECK_DELAY": "0.02"].merging(environment) { $1 })
        // Killed once its pack's upload has begun (a part is in the bucket, unlisted).
        let begun = try process.whileRunning(attempts: 200, every: 0.05) { try !client.listMultipartUploads(prefix: "killed/packs/").isEmpty }
        let stillRunning = process.isRunning
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(stillRunning && begun, "the backup ended, or never began its upload, before the kill")

        let list = try CofferBinary.run(["snapshots", "--repo", repo, "--json"], environment: environment)
        #expect((try jsonObject(list.stdout)["snapshots"] as? [[String: Any]])?.count == 1)
        #expect(try client.listMultipartUploads(prefix: "killed/").count == 1)
        let next = try CofferBinary.run(["backup", "--quiet"] + flags, environment: environment)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(try client.listMultipartUploads(prefix: "killed/").isEmpty, "the killed run's upload is abandoned")
        #expect(try CofferBinary.run(["verify", "--repo", repo, "--read-data", "--quiet"], environment: environment).status == 0)
    }
}
