@testable import CofferKit
import CofferFixtures
import Foundation
import NIOCore
import Testing

/// The S3 client against real S3-compatible servers on loopback (`make test` starts them
/// through scripts/with-s3-server; ``TestObjectStore`` finds them).
@Suite struct S3ClientTests {
    static let secret = TestObjectStore.openSecret
    static let token = TestObjectStore.openToken

    typealias Server = TestObjectStore

    /// A client on a fresh bucket of the test server, or `nil` (skipped, reason printed).
    static func client(_ test: String = #function, server: Server = .open) throws -> S3Client? {
        guard let (endpoint, credentials) = server.server else {
            print(server.skipped(test))
            return nil
        }
        let bucket = "coffer-test-\(UInt32.random(in: 0...UInt32.max))"
        let client = S3Client(bucket: bucket, endpoint: try S3Endpoint.fromEnvironment(["AWS_ENDPOINT_URL": endpoint]),
                              credentials: credentials, timeout: 20)
        try client.createBucket()
        return client
    }

    static func bytes(_ count: Int, seed: UInt8) -> Data {
        Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) })
    }

    @Test(arguments: Server.allCases)
    func putGetRangeListDelete(_ server: Server) throws {
        guard let client = try Self.client(server: server) else { return }
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
        // Keys whose characters S3's signing encodes in particular ways.
        let odd = ["odd/~tilde (1)*'!.tar", "odd/a%20b&c=d;e,f@g$h.tar", "odd/ünï/çødé"]
        for key in odd { try client.putObject(key, body: Data(key.utf8)) }
        for key in odd { #expect(try client.getObject(key) == Data(key.utf8), "\(key)") }
        #expect(try Set(client.listObjects(prefix: "odd/").map(\.key)) == Set(odd))
        for key in odd { try client.deleteObject(key) }
        #expect(try client.listObjects(prefix: "odd/").isEmpty)
    }

    @Test(arguments: Server.allCases)
    func listingFollowsEveryPage(_ server: Server) throws {
        guard let client = try Self.client(server: server) else { return }
        for i in 0..<25 { try client.putObject(String(format: "p/%03d", i), body: Data([UInt8(i)])) }
        let before = client.requestCount
        let listed = try client.listObjects(prefix: "p/", pageSize: 10)
        #expect(listed.map(\.key) == (0..<25).map { String(format: "p/%03d", $0) })
        #expect(client.requestCount - before == 3)
    }

    /// A multipart object: parts uploaded as they fill, invisible until finished, whole after;
    /// an abandoned upload leaves nothing.
    @Test(arguments: Server.allCases)
    func multipartUploadIsWholeOrNothing(_ server: Server) throws {
        guard let client = try Self.client(server: server) else { return }
        let data = Self.bytes((5 << 20) * 4 + 12345, seed: 9)
        // Parts double every two here (every 1,000 in use), so the 10,000-part limit is never met.
        let upload = S3Upload(client: client, key: "packs/big.tar", partSize: 5 << 20, partsPerSize: 2)
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
        #expect(upload.partSizes == [5 << 20, 5 << 20, 10 << 20, 12345])
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

    /// On a store that checks signatures, a wrong secret or an unknown key is named as refused
    /// credentials (a usage error: the environment is wrong); on one that checks rights, a
    /// user who may only read is told "access denied" when writing. No message carries a secret.
    @Test func refusedCredentialsAndMissingRightsAreNamed() throws {
        let wrongSecret = "wrong-secret-that-must-never-be-printed"
        if let signed = try Self.client(server: .signed) {
            try signed.putObject("repo/config.json", body: Data("{}".utf8))
            for credentials in [ObjectStoreCredentials(accessKeyID: signed.signer.credentials.accessKeyID, secretAccessKey: wrongSecret),
                                ObjectStoreCredentials(accessKeyID: "unknown-key", secretAccessKey: wrongSecret)] {
                let client = S3Client(bucket: signed.bucket, endpoint: signed.endpoint, credentials: credentials, timeout: 20)
                let refused = try #require(throws: CofferError.self) { _ = try client.getObject("repo/config.json") }
                #expect(refused.status == .usage)
                #expect(refused.message.contains("refused the credentials") && refused.message.contains("s3://\(signed.bucket)/repo/config.json"), "\(refused.message)")
                #expect(refused.hint?.contains("AWS_SECRET_ACCESS_KEY") == true)
                for text in [refused.message, refused.hint ?? "", "\(refused)"] { #expect(!text.contains(wrongSecret)) }
            }
        }
        guard let (endpoint, writerKey) = TestObjectStore.rightsServer(user: "WRITER"), let (_, readerKey) = TestObjectStore.rightsServer(user: "READER") else {
            print("skipped \(#function) on a server checking rights: none (COFFER_TEST_S3_AUTH_ENDPOINT is set by `make test`, which starts one)")
            return
        }
        let s3Endpoint = try S3Endpoint.fromEnvironment(["AWS_ENDPOINT_URL": endpoint])
        let writer = S3Client(bucket: "coffer-rights-\(UInt32.random(in: 0...UInt32.max))", endpoint: s3Endpoint, credentials: writerKey, timeout: 20)
        try writer.createBucket()
        try writer.putObject("config.json", body: Data("{}".utf8))
        let reader = S3Client(bucket: writer.bucket, endpoint: s3Endpoint, credentials: readerKey, timeout: 20)
        #expect(try reader.getObject("config.json") == Data("{}".utf8))
        let denied = try #require(throws: CofferError.self) { try reader.putObject("pack.tar", body: Data("x".utf8)) }
        #expect(denied.status == .failed)
        #expect(denied.message.contains("access denied") && denied.message.contains("s3://\(writer.bucket)/pack.tar"), "\(denied.message)")
        #expect(denied.hint?.contains("read, write, list and delete") == true)
        #expect(try writer.headObject("pack.tar") == nil)
    }

    /// A bucket in another region: S3 answers a HEAD with 301 and the region in a header, other
    /// requests with a PermanentRedirect or AuthorizationHeaderMalformed document naming it
    /// (as S3's documentation shows them; no server here checks regions). Each is a usage error
    /// that says which AWS_REGION to set.
    @Test func aWrongRegionNamesTheBucketsRegion() throws {
        let client = S3Client(bucket: "coffer-far", endpoint: S3Endpoint(scheme: "https", host: "s3.amazonaws.com", port: nil, region: "us-east-1", pathStyle: false),
                              credentials: ObjectStoreCredentials(accessKeyID: "AK", secretAccessKey: Self.secret))
        let answers: [HTTPResponse] = [
            HTTPResponse(status: 301, headers: ["x-amz-bucket-region": "eu-west-3"], body: ByteBuffer()),
            HTTPResponse(status: 301, headers: [:], body: ByteBuffer(string: """
                <?xml version="1.0" encoding="UTF-8"?>
                <Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>coffer-far.s3.eu-west-3.amazonaws.com</Endpoint><Bucket>coffer-far</Bucket><Region>eu-west-3</Region></Error>
                """)),
            HTTPResponse(status: 400, headers: [:], body: ByteBuffer(string: """
                <?xml version="1.0" encoding="UTF-8"?>
                <Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-3'</Message><Region>eu-west-3</Region></Error>
                """)),
        ]
        for answer in answers {
            let error = client.failure(answer, operation: "list", key: "repo/config.json")
            #expect(error.status == .usage)
            #expect(error.message.contains("s3://coffer-far/repo/config.json") && error.message.contains("region eu-west-3, not us-east-1"), "\(error.message)")
            #expect(error.hint == "set AWS_REGION=eu-west-3")
        }
        // The same answers from a bucket in the region asked are not taken for a region mistake.
        let near = S3Client(bucket: "coffer-near", endpoint: S3Endpoint(scheme: "https", host: "s3.amazonaws.com", port: nil, region: "eu-west-3", pathStyle: false),
                            credentials: ObjectStoreCredentials(accessKeyID: "AK", secretAccessKey: Self.secret))
        #expect(!near.failure(answers[2], operation: "list", key: nil).message.contains("not eu-west-3"))
    }

    /// A server that takes the connection and never answers (hung, or a firewall that drops):
    /// each attempt times out, is retried, and the failure says so.
    @Test func aSilentServerTimesOutAndIsRetried() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && getsockname(listener, $0, &length) == 0 }
        }
        #expect(bound && listen(listener, 16) == 0)
        let port = Int(UInt16(bigEndian: address.sin_port))
        // The kernel completes the connections (the backlog); nothing ever reads or answers.
        let silent = S3Client(bucket: "coffer-test", endpoint: S3Endpoint(scheme: "http", host: "127.0.0.1", port: port, region: "us-east-1", pathStyle: true),
                              credentials: ObjectStoreCredentials(accessKeyID: "testing", secretAccessKey: Self.secret), timeout: 1)
        silent.attempts = 2
        silent.backoff = 0.01
        let started = Date()
        let error = try #require(throws: CofferError.self) { _ = try silent.getObject("k") }
        #expect(silent.requestCount == 2)
        #expect(Date().timeIntervalSince(started) >= 2, "each attempt waited for its timeout")
        #expect(error.message.contains("no answer after 2 attempts") && error.message.lowercased().contains("timeout"), "\(error.message)")
        #expect(error.hint?.contains("AWS_ENDPOINT_URL") == true)
    }

    /// Parts grow so that S3's 10,000 reach past 6 TB, and none outgrows a buffer (2 GiB).
    @Test func partsGrowToFitAnyPack() {
        let sizes = (0..<10_000).map { S3Upload.partSize(after: $0, base: 8 << 20, partsPerSize: 1000) }
        #expect(sizes.first == 8 << 20 && sizes[999] == 8 << 20 && sizes[1000] == 16 << 20)
        #expect(zip(sizes, sizes.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(sizes.allSatisfy { $0 >= 5 << 20 && $0 <= 2 << 30 })
        #expect(sizes.reduce(Int64(0)) { $0 + Int64($1) } > 6_000_000_000_000)
        #expect(sizes.prefix(1000).reduce(0, +) == 1000 * (8 << 20), "packs up to 8 GB hold 8 MiB in memory")
    }
}
