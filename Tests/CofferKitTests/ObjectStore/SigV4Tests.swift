@testable import CofferKit
import Foundation
import Testing

@Suite struct SigV4Tests {
    /// The worked example of Amazon S3's Signature Version 4 documentation ("GET Object",
    /// examplebucket/test.txt, first ten bytes): the published signature, byte for byte.
    @Test func signsTheDocumentedGetObjectExample() {
        let signer = SigV4(credentials: ObjectStoreCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                                               secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                           region: "us-east-1")
        let date = Date(timeIntervalSince1970: 1_369_353_600) // 2013-05-24T00:00:00Z
        let headers = signer.sign(method: "GET", path: "/test.txt", query: [],
                                  headers: ["Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9"],
                                  payloadSHA256: SigV4.emptyPayloadSHA256, date: date)
        #expect(headers["x-amz-date"] == "20130524T000000Z")
        #expect(headers["Authorization"] == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    /// A session token is sent and signed; changing any signed part changes the signature.
    @Test func sessionTokenAndEverySignedPartCount() {
        let base = SigV4(credentials: ObjectStoreCredentials(accessKeyID: "AK", secretAccessKey: "SECRET"), region: "eu-west-1")
        let date = Date(timeIntervalSince1970: 1_700_000_000)
        func signature(_ signer: SigV4, method: String = "GET", path: String = "/b/k", query: [(String, String)] = [],
                       range: String = "bytes=0-1") -> String {
            let headers = signer.sign(method: method, path: path, query: query, headers: ["host": "h", "range": range],
                                      payloadSHA256: SigV4.emptyPayloadSHA256, date: date)
            return String(headers["Authorization"]!.split(separator: "=").last!)
        }
        let reference = signature(base)
        #expect(signature(base, method: "PUT") != reference)
        #expect(signature(base, path: "/b/k2") != reference)
        #expect(signature(base, query: [("a", "1")]) != reference)
        #expect(signature(base, range: "bytes=0-2") != reference)
        var other = base
        other.region = "us-east-1"
        #expect(signature(other) != reference)
        var withToken = base
        withToken.credentials = ObjectStoreCredentials(accessKeyID: "AK", secretAccessKey: "SECRET", sessionToken: "TOKEN")
        let headers = withToken.sign(method: "GET", path: "/", query: [], headers: ["host": "h"], payloadSHA256: SigV4.emptyPayloadSHA256, date: date)
        #expect(headers["x-amz-security-token"] == "TOKEN")
        #expect(headers["Authorization"]!.contains("x-amz-security-token"))
    }

    @Test func encodesAsSigV4Wants() {
        #expect(SigV4.encodePath("packs/a b+c=d~e_f.tar") == "packs/a%20b%2Bc%3Dd~e_f.tar")
        #expect(SigV4.encodePath("é/ü") == "%C3%A9/%C3%BC")
        #expect(SigV4.encode("a/b", keepSlash: false) == "a%2Fb")
        // Sorted by encoded name, then value; empty values keep their `=`.
        #expect(SigV4.canonicalQuery([("uploads", ""), ("prefix", "a b"), ("list-type", "2")]) == "list-type=2&prefix=a%20b&uploads=")
        #expect(SigV4.trimmed("  a   b  ") == "a b")
    }

    /// The secret and the session token never show in a description, an interpolation or a dump.
    @Test func credentialsNeverShowTheirSecrets() {
        let credentials = ObjectStoreCredentials(accessKeyID: "AKIDVISIBLE", secretAccessKey: "s3cr3t-never-shown",
                                                 sessionToken: "t0ken-never-shown")
        var dumped = ""
        dump(credentials, to: &dumped)
        for text in ["\(credentials)", String(describing: credentials), String(reflecting: credentials), dumped,
                     "\([credentials])", "\(Optional(credentials) as Any)"] {
            #expect(!text.contains("s3cr3t") && !text.contains("t0ken"), "\(text)")
            #expect(text.contains("AKIDVISIBLE") || text.contains("ObjectStoreCredentials"), "\(text)")
        }
        let environment = ["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S", "AWS_SESSION_TOKEN": ""]
        #expect(ObjectStoreCredentials.fromEnvironment(environment)?.sessionToken == nil)
        #expect(ObjectStoreCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "A"]) == nil)
    }

    @Test func addressesAndEndpoints() throws {
        let address = try S3Address("s3://my-bucket/backups//coffer/")
        #expect(address.bucket == "my-bucket" && address.prefix == "backups/coffer")
        #expect(address.key("packs/x.tar") == "backups/coffer/packs/x.tar")
        #expect(try S3Address("s3://my-bucket").key("config.json") == "config.json")
        for bad in ["s3://", "s3://UPPER/x", "s3://ab", "http://bucket/x", "s3://-bucket/x"] {
            #expect(throws: CofferError.self, "\(bad)") { _ = try S3Address(bad) }
        }
        let local = try S3Endpoint.fromEnvironment(["AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-central-1"])
        #expect(local.pathStyle && local.authority == "127.0.0.1:9000" && local.region == "eu-central-1")
        let aws = try S3Endpoint.fromEnvironment([:])
        #expect(!aws.pathStyle && aws.host == "s3.us-east-1.amazonaws.com" && aws.scheme == "https")
        #expect(throws: CofferError.self) { _ = try S3Endpoint.fromEnvironment(["AWS_ENDPOINT_URL": "ftp://x"]) }
    }
}
