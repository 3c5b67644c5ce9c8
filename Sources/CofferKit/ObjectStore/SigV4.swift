import Crypto
import Foundation

/// Credentials for an S3-compatible store, from the usual AWS environment variables.
///
/// The secret and the session token never leave this value except inside a signature: its
/// description (and so string interpolation, `dump`, logs and error messages built from it)
/// shows the access key id only.
public struct ObjectStoreCredentials: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public let accessKeyID: String
    let secretAccessKey: String
    let sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; `nil` when the first two
    /// are not both set.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> ObjectStoreCredentials? {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
              let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else { return nil }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return ObjectStoreCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    public var description: String { "access key \(accessKeyID) (secret not shown)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["accessKeyID": accessKeyID]) }
}

/// AWS Signature Version 4, as S3 takes it: an `Authorization` header over the method, the
/// path, the query, the signed headers and the SHA-256 of the payload.
struct SigV4 {
    var credentials: ObjectStoreCredentials
    var region: String
    var service = "s3"

    /// The SHA-256 of an empty payload.
    static let emptyPayloadSHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` (with a session token) and `Authorization`.
    ///
    /// - Parameters:
    ///   - path: the request's path as sent, already percent-encoded (``SigV4/encodePath(_:)``).
    ///   - query: the query's names and values, not encoded.
    ///   - headers: the other headers to sign; `host` must be among them.
    func sign(method: String, path: String, query: [(String, String)], headers: [String: String],
              payloadSHA256: String, date: Date) -> [String: String] {
        let stamp = Self.timestamp(date)
        let day = String(stamp.prefix(8))
        var signed: [String: String] = [:]
        for (name, value) in headers { signed[name.lowercased()] = Self.trimmed(value) }
        signed["x-amz-date"] = stamp
        signed["x-amz-content-sha256"] = payloadSHA256
        if let token = credentials.sessionToken { signed["x-amz-security-token"] = token }
        let names = signed.keys.sorted()
        let canonical = [
            method,
            path,
            Self.canonicalQuery(query),
            names.map { "\($0):\(signed[$0]!)\n" }.joined(),
            names.joined(separator: ";"),
            payloadSHA256,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let toSign = ["AWS4-HMAC-SHA256", stamp, scope, Digest.hex(SHA256.hash(data: Data(canonical.utf8)))].joined(separator: "\n")
        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Digest.hex(HMAC<SHA256>.authenticationCode(for: Data(toSign.utf8), using: key))
        var out: [String: String] = ["x-amz-date": stamp, "x-amz-content-sha256": payloadSHA256]
        if let token = credentials.sessionToken { out["x-amz-security-token"] = token }
        out["Authorization"] = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(names.joined(separator: ";")), Signature=\(signature)"
        return out
    }

    static func timestamp(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// Header values are signed with surrounding spaces removed and inner runs of spaces as one.
    static func trimmed(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    static func canonicalQuery(_ query: [(String, String)]) -> String {
        var pairs: [(name: String, value: String)] = []
        for (name, value) in query { pairs.append((encode(name, keepSlash: false), encode(value, keepSlash: false))) }
        pairs.sort { (a: (name: String, value: String), b: (name: String, value: String)) -> Bool in
            a.name == b.name ? a.value < b.value : a.name < b.name
        }
        return pairs.map { $0.name + "=" + $0.value }.joined(separator: "&")
    }

    /// An object key as a URL path (every byte but the unreserved ones percent-encoded, `/` kept).
    static func encodePath(_ path: String) -> String { encode(path, keepSlash: true) }

    /// RFC 3986 percent-encoding as SigV4 wants it: A–Z a–z 0–9 `-._~` kept, every other byte
    /// of the UTF-8 form as `%XX` (upper-case hex).
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, 0x2D, 0x2E, 0x5F, 0x7E: true // A-Z a-z 0-9 - . _ ~
        default: false
        }
    }

    static func encode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) || (keepSlash && byte == 0x2F) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }
}
