@testable import CofferKit
import Foundation
import Testing

/// The S3 client against a real S3-compatible server on loopback (`make test` starts moto's
/// through scripts/with-s3-server and names it in COFFER_TEST_S3_ENDPOINT).
@Suite struct S3ClientTests {
    static let secret = "test-secret-key-that-must-never-be-printed"
    static let token = "test-session-token-that-must-never-be-printed"

    /// A client on a fresh bucket of the test server, or `nil` (skipped, reason printed).
    static func client(_ test: String = #function) throws -> S3Client? {
        guard let endpoint = ProcessInfo.processInfo.environment["COFFER_TEST_S3_ENDPOINT"] else {
            print("skipped \(test): no S3 server (COFFER_TEST_S3_ENDPOINT is set by `make test`, which starts one)")
            return nil
        }
        let bucket = "coffer-test-\(UInt32.random(in: 0...UInt32.max))"
        let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(["AWS_ENDPOINT_URL": endpoint]),
                              credentials: ObjectStoreCredentials(accessKeyID: "testing", secretAccessKey: secret, sessionToken: token),
                              timeout: 20)
        try client.createBucket()
        return client
    }

    static func bytes(_ count: Int, seed: UInt8) -> Data {
        Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) })
    }

    @Test func putGetRangeListDelete() throws {
        guard let client = try Self.client() else { return }
        let keys = ["repo/config.json", "repo/packs/a b+c=d.tar", "repo/snapshots/é ü.jsonl", "repo/snapshots/z"]
        for (index, key) in keys.enumerated() { try client.putObject(key, body: Self.bytes(1000 + index, seed: UInt8(index))) }
        #expect(try client.getObject(keys[1]) == Self.bytes(1001, seed: 1))
        #expect(try client.getObject("repo/missing") == nil)
        #expect(try client.headObject(keys[2]) == 1002)
        #expect(try client.headObject("repo/missing") == nil)
        // A ranged GET fetches just those bytes.
        let before = client.bytesReceived
        #expect(try client.getObject(keys[1], offset: 100, length: 10) == Self.bytes(1001, seed: 1).subdata(in: 100..<110))
        #expect(client.bytesReceived - before == 10)
        #expect(throws: CofferError.self) { _ = try client.getObject(keys[1], offset: 995, length: 10) }
        // In byte order: "z" (7A) before "é" (C3 A9).
        #expect(try client.listObjects(prefix: "repo/snapshots/").map(\.key) == [keys[3], keys[2]])
        #expect(try client.listObjects(prefix: "repo/").map(\.size) == [1000, 1001, 1003, 1002])
        try client.deleteObject(keys[1])
        try client.deleteObject(keys[1]) // a missing object is not an error
        #expect(try client.listObjects(prefix: "repo/").count == 3)
    }

    @Test func listingFollowsEveryPage() throws {
        guard let client = try Self.client() else { return }
        for i in 0..<25 { try client.putObject(String(format: "p/%03d", i), body: Data([UInt8(i)])) }
        let before = client.requestCount
        let listed = try client.listObjects(prefix: "p/", pageSize: 10)
        #expect(listed.map(\.key) == (0..<25).map { String(format: "p/%03d", $0) })
        #expect(client.requestCount - before == 3)
    }

    /// A multipart object: parts uploaded as they fill, invisible until finished, whole after;
    /// an abandoned upload leaves nothing.
    @Test func multipartUploadIsWholeOrNothing() throws {
        guard let client = try Self.client() else { return }
        let data = Self.bytes((5 << 20) * 2 + 12345, seed: 9)
        let upload = S3Upload(client: client, key: "packs/big.tar", partSize: 5 << 20)
        try data.withUnsafeBytes { all in
            var offset = 0
            while offset < all.count { // odd-sized writes, as the pack writer's
                let n = min(777_777, all.count - offset)
                try upload.write(UnsafeRawBufferPointer(rebasing: all[offset..<offset + n]))
                offset += n
            }
        }
        #expect(try client.listObjects(prefix: "packs/").isEmpty, "nothing listed before the upload is finished")
        try upload.finish()
        #expect(upload.size == Int64(data.count))
        #expect(try client.headObject("packs/big.tar") == Int64(data.count))
        #expect(try client.getObject("packs/big.tar") == data)
        #expect(try client.getObject("packs/big.tar", offset: Int64(5 << 20) - 3, length: 6) == data.subdata(in: (5 << 20) - 3..<(5 << 20) + 3))

        let small = S3Upload(client: client, key: "packs/small.tar", partSize: 5 << 20)
        try Data("tiny".utf8).withUnsafeBytes { try small.write($0) }
        try small.finish()
        #expect(try client.getObject("packs/small.tar") == Data("tiny".utf8))

        do {
            let abandoned = S3Upload(client: client, key: "packs/abandoned.tar", partSize: 5 << 20)
            try data.withUnsafeBytes { try abandoned.write($0) }
            abandoned.abort()
        }
        #expect(try client.headObject("packs/abandoned.tar") == nil)
    }

    /// Errors name the bucket or object and what to do, and never carry the credentials.
    @Test func errorsAreClearAndCarryNoCredentials() throws {
        guard let client = try Self.client() else { return }
        let missing = S3Client(bucket: "coffer-no-such-bucket", endpoint: client.endpoint,
                               credentials: ObjectStoreCredentials(accessKeyID: "testing", secretAccessKey: Self.secret, sessionToken: Self.token))
        let error = try #require(throws: CofferError.self) { _ = try missing.listObjects(prefix: "") }
        #expect(error.message.contains("s3://coffer-no-such-bucket") && error.message.contains("no such bucket"), "\(error.message)")
        #expect(error.hint?.contains("create the bucket") == true)

        // Nobody listening: retried with backoff, then a clear failure.
        let closed = S3Client(bucket: "coffer-test", endpoint: S3Endpoint(scheme: "http", host: "127.0.0.1", port: 9, region: "us-east-1", pathStyle: true),
                              credentials: ObjectStoreCredentials(accessKeyID: "testing", secretAccessKey: Self.secret, sessionToken: Self.token),
                              timeout: 5)
        closed.attempts = 3
        closed.backoff = 0.01
        let refused = try #require(throws: CofferError.self) { _ = try closed.getObject("k") }
        #expect(closed.requestCount == 3)
        #expect(refused.message.contains("no answer after 3 attempts"), "\(refused.message)")
        for text in [error.message, error.hint ?? "", refused.message, refused.hint ?? "", "\(error)", "\(refused)"] {
            #expect(!text.contains(Self.secret) && !text.contains(Self.token), "\(text)")
        }
    }
}
