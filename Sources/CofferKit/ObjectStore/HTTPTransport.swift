import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One HTTP exchange: status, headers (names lower-cased) and the whole body.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: ByteBuffer

    func header(_ name: String) -> String? { headers[name.lowercased()] }

    /// The body as `Data` (a copy: for the small answers, XML and such).
    var data: Data { Data(body.readableBytesView) }
}

/// A failure to exchange at all (refused, reset, timed out): worth a retry.
struct HTTPTransportError: Error, Sendable {
    var description: String
}

/// Blocking HTTP on SwiftNIO's AsyncHTTPClient: Coffer's commands are sequential, so each
/// request waits for its answer. No cookies, no redirects followed (an S3 redirect names the
/// bucket's region, which the caller reports). Connections are kept and reused.
final class HTTPTransport: @unchecked Sendable {
    private let client: HTTPClient

    init(timeout: TimeInterval = 120) {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow,
                                                     timeout: .init(connect: .seconds(10), read: .seconds(Int64(max(1, timeout)))))
        configuration.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    deinit { try? client.syncShutdown() }

    /// Sends `body` as it is (the buffer is shared with the client while it is sent, not
    /// copied) and collects the answer's body into one buffer sized from its Content-Length.
    func send(method: String, url: URL, headers: [String: String], body: ByteBuffer?) throws -> HTTPResponse {
        var fields = HTTPHeaders()
        for (name, value) in headers { fields.add(name: name, value: value) }
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: url, method: HTTPMethod(rawValue: method), headers: fields,
                                             body: body.map { .byteBuffer($0) })
        } catch {
            throw HTTPTransportError(description: "bad request URL (\(error))")
        }
        do {
            return try client.execute(request: request, delegate: BodyCollector()).wait()
        } catch {
            // NIO's and the client's errors name the failure, never the request's headers.
            throw HTTPTransportError(description: String(describing: error))
        }
    }
}

/// Collects an answer into a buffer allocated once at the size its Content-Length announces
/// (the client's own collector grows its buffer by doubling, copying the body each time).
private final class BodyCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = HTTPResponse
    /// Larger announcements are not believed up front: the buffer grows past this as bytes come.
    static let largestReservation = 64 << 20
    private var response = HTTPResponse(status: 0, headers: [:], body: ByteBuffer())

    func didReceiveHead(task: HTTPClient.Task<HTTPResponse>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        response.status = Int(head.status.code)
        for (name, value) in head.headers { response.headers[name.lowercased()] = value }
        if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > 0 {
            response.body = ByteBufferAllocator().buffer(capacity: min(length, Self.largestReservation))
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<HTTPResponse>, _ part: ByteBuffer) -> EventLoopFuture<Void> {
        var part = part
        response.body.writeBuffer(&part)
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<HTTPResponse>) throws -> HTTPResponse {
        defer { response.body = ByteBuffer() }
        return response
    }
}
