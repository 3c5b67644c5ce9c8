import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One HTTP exchange: status, headers (names lower-cased) and the whole body.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data

    func header(_ name: String) -> String? { headers[name.lowercased()] }
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

    func send(method: String, url: URL, headers: [String: String], body: Data?) throws -> HTTPResponse {
        var fields = HTTPHeaders()
        for (name, value) in headers { fields.add(name: name, value: value) }
        let request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: url, method: HTTPMethod(rawValue: method), headers: fields,
                                             body: body.map { .byteBuffer(ByteBuffer(bytes: $0)) })
        } catch {
            throw HTTPTransportError(description: "bad request URL (\(error))")
        }
        let response: HTTPClient.Response
        do {
            response = try client.execute(request: request).wait()
        } catch {
            // NIO's and the client's errors name the failure, never the request's headers.
            throw HTTPTransportError(description: String(describing: error))
        }
        var received: [String: String] = [:]
        for (name, value) in response.headers { received[name.lowercased()] = value }
        let data = response.body.map { Data($0.readableBytesView) } ?? Data()
        return HTTPResponse(status: Int(response.status.code), headers: received, body: data)
    }
}
