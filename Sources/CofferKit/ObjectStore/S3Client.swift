import Crypto
import Foundation
import NIOCore
#if canImport(FoundationXML)
import FoundationXML
#endif

/// `s3://bucket/prefix`: where a repository lives in an object store.
public struct S3Address: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    /// Without leading or trailing `/`; may be empty.
    public var prefix: String

    /// Parses `s3://bucket[/prefix]`; a usage error (exit 64) names what is wrong.
    public init(_ text: String) throws {
        guard text.hasPrefix("s3://") else {
            throw CofferError(.usage, operation: "read repository address", subject: text, cause: "not an s3:// address",
                              hint: "write it as s3://BUCKET/PREFIX")
        }
        let rest = text.dropFirst("s3://".count)
        let bucket = String(rest.prefix { $0 != "/" })
        let prefix = rest.dropFirst(bucket.count).split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
        guard Self.isValidBucket(bucket) else {
            throw CofferError(.usage, operation: "read repository address", subject: text,
                              cause: "\(CofferError.quoted(bucket)) is not a bucket name (3 to 63 lower-case letters, digits, dots and hyphens)",
                              hint: "write it as s3://BUCKET/PREFIX")
        }
        self.bucket = bucket
        self.prefix = prefix
    }

    static func isValidBucket(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (3...63).contains(bytes.count) else { return false }
        func alnum(_ b: UInt8) -> Bool { (48...57).contains(b) || (97...122).contains(b) }
        guard alnum(bytes.first!), alnum(bytes.last!) else { return false }
        return bytes.allSatisfy { alnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// The object key of a repository object name (`packs/X.tar`).
    func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "/" + name }

    public var description: String { "s3://\(bucket)" + (prefix.isEmpty ? "" : "/\(prefix)") }
}

/// Where and how to reach the store: AWS_ENDPOINT_URL (self-hosted stores, addressed
/// path-style: `http://host:port/bucket/key`), else AWS itself (`https://bucket.s3.REGION...`);
/// AWS_REGION (or AWS_DEFAULT_REGION), us-east-1 when neither is set.
public struct S3Endpoint: Sendable {
    public var scheme: String
    public var host: String
    public var port: Int?
    public var region: String
    public var pathStyle: Bool

    public init(scheme: String, host: String, port: Int?, region: String, pathStyle: Bool) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.region = region
        self.pathStyle = pathStyle
    }

    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Endpoint {
        let region = [environment["AWS_REGION"], environment["AWS_DEFAULT_REGION"]].compactMap { $0 }.first { !$0.isEmpty } ?? "us-east-1"
        guard let text = environment["AWS_ENDPOINT_URL"], !text.isEmpty else {
            return S3Endpoint(scheme: "https", host: "s3.\(region).amazonaws.com", port: nil, region: region, pathStyle: false)
        }
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            throw CofferError.badSetting("AWS_ENDPOINT_URL", text, "not an http:// or https:// URL", hint: "e.g. http://127.0.0.1:9000")
        }
        return S3Endpoint(scheme: scheme, host: host, port: url.port, region: region, pathStyle: true)
    }

    /// `host[:port]` as the Host header carries it.
    var authority: String { port.map { "\(host):\($0)" } ?? host }
}

/// A native S3 client: Signature V4, the handful of calls a repository needs, retries with
/// backoff on 5xx, 429 and transport failures, and errors that say what to fix. Credentials
/// never appear in what it throws or logs.
public final class S3Client: @unchecked Sendable {
    public let bucket: String
    let endpoint: S3Endpoint
    let signer: SigV4
    let transport: HTTPTransport
    /// Attempts per request (the first and the retries) and the first backoff; doubled each time.
    var attempts = 5
    var backoff: TimeInterval = 0.2
    /// Requests sent, retries included (tests and --verbose read them).
    private(set) var requestCount = 0
    /// Bytes received in response bodies.
    private(set) var bytesReceived: Int64 = 0

    public init(bucket: String, endpoint: S3Endpoint, credentials: ObjectStoreCredentials, timeout: TimeInterval = 120) {
        self.bucket = bucket
        self.endpoint = endpoint
        signer = SigV4(credentials: credentials, region: endpoint.region)
        transport = HTTPTransport(timeout: timeout)
    }

    /// `s3://bucket/key`, for messages.
    func display(_ key: String?) -> String { "s3://\(bucket)" + (key.map { "/" + $0 } ?? "") }

    // MARK: Objects

    /// Stores `body` under `key` in one request (small objects; see ``S3Upload`` for packs).
    func putObject(_ key: String, body: Data) throws {
        try putObject(key, body: ByteBuffer(bytes: body))
    }

    func putObject(_ key: String, body: ByteBuffer) throws {
        _ = try send("PUT", key: key, headers: ["Content-Type": "application/octet-stream"], body: body, operation: "upload")
    }

    /// The whole object, or `nil` when there is none.
    func getObject(_ key: String) throws -> Data? {
        let response = try send("GET", key: key, operation: "download", accept: [200, 404])
        guard response.status == 404 else { return response.data }
        // A missing bucket is not a missing object.
        if Self.errorCode(response) == "NoSuchBucket" { throw failure(response, operation: "download", key: key) }
        return nil
    }

    /// `length` bytes from `offset` (a ranged GET). Throws when the object is shorter.
    func getObject(_ key: String, offset: Int64, length: Int) throws -> Data {
        Data(try getRange(key, offset: offset, length: length).readableBytesView)
    }

    /// `length` bytes from `offset` (a ranged GET), in the buffer they arrived in.
    func getRange(_ key: String, offset: Int64, length: Int) throws -> ByteBuffer {
        guard length > 0 else { return ByteBuffer() }
        let response = try send("GET", key: key, headers: ["Range": "bytes=\(offset)-\(offset + Int64(length) - 1)"],
                                operation: "download", accept: [206, 200])
        // A server that ignores Range answers 200 with everything: take the range from it.
        let body = response.status == 200 && offset + Int64(length) <= Int64(response.body.readableBytes)
            ? response.body.getSlice(at: response.body.readerIndex + Int(offset), length: length)! : response.body
        guard body.readableBytes == length else {
            throw CofferError(.failed, operation: "download", subject: display(key),
                              cause: "asked for \(length) bytes at \(offset), got \(body.readableBytes) (the object is shorter: damaged or truncated?)")
        }
        return body
    }

    /// The object's size, or `nil` when there is none.
    func headObject(_ key: String) throws -> Int64? {
        let response = try send("HEAD", key: key, operation: "look up", accept: [200, 404])
        guard response.status == 200 else { return nil }
        return response.header("content-length").flatMap { Int64($0) }
    }

    /// Deletes `key`; a missing object is not an error.
    func deleteObject(_ key: String) throws {
        _ = try send("DELETE", key: key, operation: "delete", accept: [200, 204, 404])
    }

    /// Every object under `prefix` (ListObjectsV2, all pages of up to `pageSize`), with its
    /// size, in key order.
    func listObjects(prefix: String, pageSize: Int = 1000) throws -> [(key: String, size: Int64)] {
        var objects: [(key: String, size: Int64)] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", "\(pageSize)")]
            if let token { query.append(("continuation-token", token)) }
            let response = try send("GET", key: nil, query: query, operation: "list")
            let page = try S3XML.parse(response.data, what: "listing of \(display(prefix))")
            for contents in page.children(named: "Contents") {
                guard let key = contents.child("Key")?.text else { continue }
                objects.append((key, Int64(contents.child("Size")?.text ?? "") ?? 0))
            }
            token = page.child("IsTruncated")?.text == "true" ? page.child("NextContinuationToken")?.text : nil
        } while token != nil
        // In S3's order: by the keys' UTF-8 bytes (Swift's String order is not byte order).
        return objects.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
    }

    /// Creates the bucket (in the endpoint's region); one that is already there and ours is fine.
    public func createBucket() throws {
        let body = endpoint.region == "us-east-1" ? nil : ByteBuffer(string: """
            <CreateBucketConfiguration><LocationConstraint>\(endpoint.region)</LocationConstraint></CreateBucketConfiguration>
            """)
        let response = try send("PUT", key: nil, headers: body == nil ? [:] : ["Content-Type": "application/xml"], body: body,
                                operation: "create bucket", accept: [200, 409])
        if response.status == 409, Self.errorCode(response) != "BucketAlreadyOwnedByYou" {
            throw failure(response, operation: "create bucket", key: nil)
        }
    }

    // MARK: Multipart upload

    func createMultipartUpload(_ key: String) throws -> String {
        let response = try send("POST", key: key, query: [("uploads", "")], operation: "start upload of")
        guard let id = try S3XML.parse(response.data, what: "upload of \(display(key))").child("UploadId")?.text, !id.isEmpty else {
            throw CofferError(.failed, operation: "start upload of", subject: display(key), cause: "the store gave no upload id")
        }
        return id
    }

    /// Uploads one part (1...10,000); returns its ETag.
    func uploadPart(_ key: String, uploadID: String, number: Int, body: ByteBuffer) throws -> String {
        let response = try send("PUT", key: key, query: [("partNumber", "\(number)"), ("uploadId", uploadID)],
                                headers: ["Content-Type": "application/octet-stream"], body: body,
                                operation: "upload part \(number) of")
        guard let etag = response.header("etag") else {
            throw CofferError(.failed, operation: "upload part \(number) of", subject: display(key), cause: "the store gave no ETag")
        }
        return etag
    }

    func completeMultipartUpload(_ key: String, uploadID: String, parts: [(number: Int, etag: String)]) throws {
        var xml = "<CompleteMultipartUpload>"
        for part in parts { xml += "<Part><PartNumber>\(part.number)</PartNumber><ETag>\(S3XML.escape(part.etag))</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        // The type is said: a body without one is taken for a form by some servers.
        let response = try send("POST", key: key, query: [("uploadId", uploadID)], headers: ["Content-Type": "application/xml"],
                                body: ByteBuffer(string: xml), operation: "finish upload of")
        // S3 may answer 200 and still fail the completion, in the body.
        if let error = try? S3XML.parse(response.data, what: ""), error.name == "Error" {
            throw failure(HTTPResponse(status: 500, headers: response.headers, body: response.body), operation: "finish upload of", key: key)
        }
    }

    /// The multipart uploads begun and neither finished nor abandoned under `prefix` (all
    /// pages), as key and upload id.
    func listMultipartUploads(prefix: String) throws -> [(key: String, uploadID: String)] {
        var uploads: [(key: String, uploadID: String)] = []
        var markers: (key: String, uploadID: String)?
        repeat {
            var query = [("uploads", ""), ("prefix", prefix)]
            if let markers { query += [("key-marker", markers.key), ("upload-id-marker", markers.uploadID)] }
            let response = try send("GET", key: nil, query: query, operation: "list uploads in")
            let page = try S3XML.parse(response.data, what: "uploads in \(display(prefix))")
            for upload in page.children(named: "Upload") {
                guard let key = upload.child("Key")?.text, let id = upload.child("UploadId")?.text else { continue }
                uploads.append((key, id))
            }
            markers = nil
            if page.child("IsTruncated")?.text == "true", let key = page.child("NextKeyMarker")?.text,
               let id = page.child("NextUploadIdMarker")?.text, !(key.isEmpty && id.isEmpty) {
                markers = (key, id)
            }
        } while markers != nil
        return uploads
    }

    func abortMultipartUpload(_ key: String, uploadID: String) throws {
        _ = try send("DELETE", key: key, query: [("uploadId", uploadID)], operation: "abandon upload of", accept: [200, 204, 404])
    }

    // MARK: Requests

    /// Sends one signed request, retried with backoff on 5xx, 429 and transport failures.
    func send(_ method: String, key: String?, query: [(String, String)] = [], headers: [String: String] = [:], body: ByteBuffer? = nil,
              operation: String, accept: Set<Int> = [200]) throws -> HTTPResponse {
        var path = "/"
        if endpoint.pathStyle { path += bucket + (key == nil ? "" : "/") }
        if let key { path += SigV4.encodePath(key) }
        let host = endpoint.pathStyle ? endpoint.authority : "\(bucket).\(endpoint.authority)"
        let queryText = SigV4.canonicalQuery(query)
        guard let url = URL(string: "\(endpoint.scheme)://\(host)\(path)" + (queryText.isEmpty ? "" : "?" + queryText)) else {
            throw CofferError(.usage, operation: operation, subject: display(key), cause: "cannot make a URL of it")
        }
        let payload = body.map { body in body.withUnsafeReadableBytes { Digest.hex(SHA256.hash(data: $0)) } } ?? SigV4.emptyPayloadSHA256
        var lastFailure = ""
        for attempt in 0..<attempts {
            if attempt > 0 {
                let delay = backoff * pow(2, Double(attempt - 1)) * Double.random(in: 0.8...1.2)
                Thread.sleep(forTimeInterval: delay)
            }
            var signedHeaders = headers
            signedHeaders["host"] = host
            let auth = signer.sign(method: method, path: path, query: query, headers: signedHeaders, payloadSHA256: payload, date: Date())
            var all = headers
            for (name, value) in auth { all[name] = value }
            requestCount += 1
            let response: HTTPResponse
            do {
                response = try transport.send(method: method, url: url, headers: all, body: body)
            } catch let error as HTTPTransportError {
                lastFailure = error.description
                continue
            }
            bytesReceived += Int64(response.body.readableBytes)
            if accept.contains(response.status) { return response }
            if response.status >= 500 || response.status == 429 {
                lastFailure = "HTTP \(response.status)" + (Self.errorCode(response).map { " \($0)" } ?? "")
                continue
            }
            throw failure(response, operation: operation, key: key)
        }
        throw CofferError(.failed, operation: operation, subject: display(key),
                          cause: "no answer after \(attempts) attempts (last: \(lastFailure))",
                          hint: "check that the store at \(endpoint.scheme)://\(endpoint.authority) is up and reachable (AWS_ENDPOINT_URL)")
    }

    static func errorCode(_ response: HTTPResponse) -> String? {
        (try? S3XML.parse(response.data, what: ""))?.child("Code")?.text
    }

    /// What an error answer means, in words an operator can act on. Built from the status,
    /// the store's error code and message and the bucket's region: never from the request.
    func failure(_ response: HTTPResponse, operation: String, key: String?) -> CofferError {
        let document = try? S3XML.parse(response.data, what: "")
        let code = document?.child("Code")?.text ?? ""
        let message = document?.child("Message")?.text ?? ""
        let said = code.isEmpty ? "HTTP \(response.status)" : "HTTP \(response.status) \(code)" + (message.isEmpty ? "" : ": \(message)")
        let bucketRegion = response.header("x-amz-bucket-region") ?? document?.child("Region")?.text
        if let bucketRegion, bucketRegion != endpoint.region,
           response.status == 301 || code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || code == "IllegalLocationConstraintException" {
            return CofferError(.usage, operation: operation, subject: display(key),
                               cause: "the bucket is in region \(bucketRegion), not \(endpoint.region) (\(said))",
                               hint: "set AWS_REGION=\(bucketRegion)")
        }
        switch (response.status, code) {
        case (403, "SignatureDoesNotMatch"), (403, "InvalidAccessKeyId"), (403, "InvalidToken"), (403, "ExpiredToken"):
            return CofferError(.usage, operation: operation, subject: display(key), cause: "the store refused the credentials (\(said))",
                               hint: "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN")
        case (403, _):
            return CofferError(.failed, operation: operation, subject: display(key), cause: "access denied (\(said))",
                               hint: "the credentials need read, write, list and delete on the bucket and prefix")
        case (404, "NoSuchBucket"):
            return CofferError(.failed, operation: operation, subject: display(nil), cause: "no such bucket (\(said))",
                               hint: "create the bucket first, or check the name and AWS_ENDPOINT_URL")
        default:
            return CofferError(.failed, operation: operation, subject: display(key), cause: said)
        }
    }
}

/// An object written a part at a time (S3 multipart upload), each part uploaded as soon as it
/// is full: memory holds one part, whatever the object's size. An object smaller than a part
/// goes up in one PUT. Nothing is visible under the key until ``finish()``.
///
/// S3 allows 10,000 parts per object, so parts grow with the object: `partSize` for the first
/// 1,000, twice that for the next 1,000, and so on up to 2 GiB (8 MiB parts reach 8 GB, then
/// 16 MiB parts 24 GB, 32 MiB parts 56 GB; the 10,000th part ends past 6 TB).
final class S3Upload {
    let client: S3Client
    let key: String
    let partSize: Int
    /// Parts of one size before the size doubles.
    let partsPerSize: Int
    /// The part being filled; handed to the HTTP client as it is, then emptied for the next.
    private var buffer: ByteBuffer
    private var uploadID: String?
    private var parts: [(number: Int, etag: String)] = []
    /// The size of each part uploaded so far.
    private(set) var partSizes: [Int] = []
    private(set) var size: Int64 = 0
    private var finished = false

    /// - Parameter partSize: at least 5 MiB (S3's minimum for all parts but the last).
    init(client: S3Client, key: String, partSize: Int = 8 << 20, partsPerSize: Int = 1000) {
        self.client = client
        self.key = key
        self.partSize = max(partSize, 5 << 20)
        self.partsPerSize = max(partsPerSize, 1)
        buffer = ByteBufferAllocator().buffer(capacity: self.partSize)
    }

    /// The size of the part being filled, at most 2 GiB (S3 takes 5 GiB; a buffer holds less
    /// than 4 GiB).
    var currentPartSize: Int { Self.partSize(after: parts.count, base: partSize, partsPerSize: partsPerSize) }

    static func partSize(after uploaded: Int, base: Int, partsPerSize: Int) -> Int {
        min(base << min(uploaded / partsPerSize, 10), 2 << 30)
    }

    deinit {
        if !finished { abort() }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            let target = currentPartSize
            let n = min(rest.count, target - buffer.readableBytes)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: rest[0..<n]))
            size += Int64(n)
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
            if buffer.readableBytes == target { try uploadPart() }
        }
    }

    private func uploadPart() throws {
        if uploadID == nil { uploadID = try client.createMultipartUpload(key) }
        let number = parts.count + 1
        parts.append((number, try client.uploadPart(key, uploadID: uploadID!, number: number, body: buffer)))
        partSizes.append(buffer.readableBytes)
        // The client has let go of the part: its memory is filled again, not allocated anew
        // (unless the next part is larger).
        buffer.clear(minimumCapacity: currentPartSize)
    }

    /// Publishes the object whole.
    func finish() throws {
        if uploadID == nil {
            try client.putObject(key, body: buffer)
        } else {
            if buffer.readableBytes > 0 { try uploadPart() }
            try client.completeMultipartUpload(key, uploadID: uploadID!, parts: parts)
        }
        buffer = ByteBuffer()
        finished = true
    }

    /// Drops what was uploaded (best effort: a store's lifecycle rule sweeps what this misses).
    func abort() {
        finished = true
        buffer = ByteBuffer()
        if let uploadID { try? client.abortMultipartUpload(key, uploadID: uploadID) }
    }
}

/// Just enough XML for S3's answers: elements, their text, their children.
final class S3XML {
    let name: String
    var text = ""
    var elements: [S3XML] = []

    init(name: String) { self.name = name }

    func child(_ name: String) -> S3XML? { elements.first { $0.name == name } }
    func children(named name: String) -> [S3XML] { elements.filter { $0.name == name } }

    /// The root element of `data`.
    static func parse(_ data: Data, what: String) throws -> S3XML {
        let builder = Builder()
        let parser = XMLParser(data: data)
        parser.delegate = builder
        guard parser.parse(), let root = builder.top.elements.first else {
            throw CofferError(.failed, operation: "read", subject: what, cause: "the store's answer is not the XML expected")
        }
        return root
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    private final class Builder: NSObject, XMLParserDelegate {
        let top = S3XML(name: "")
        lazy var stack: [S3XML] = [top]

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            let element = S3XML(name: elementName)
            stack.last!.elements.append(element)
            stack.append(element)
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            stack.removeLast()
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            stack.last!.text += string
        }
    }
}
