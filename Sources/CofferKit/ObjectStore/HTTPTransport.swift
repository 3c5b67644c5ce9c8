import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

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

/// Blocking HTTP on Foundation's URLSession (libcurl on Linux): Coffer's commands are
/// sequential, so each request waits for its answer. No cookies, no cache, no redirects
/// followed (an S3 redirect names the bucket's region, which the caller reports).
final class HTTPTransport: @unchecked Sendable {
    private let session: URLSession
    private let delegate = NoRedirects()

    init(timeout: TimeInterval = 120) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        configuration.httpCookieStorage = nil
        configuration.urlCache = nil
        configuration.httpShouldSetCookies = false
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: configuration, delegate: delegate, delegateQueue: nil)
    }

    deinit { session.invalidateAndCancel() }

    func send(method: String, url: URL, headers: [String: String], body: Data?) throws -> HTTPResponse {
        var request = URLRequest(url: url)
        request.httpMethod = method
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let body { request.httpBody = body }
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Result<HTTPResponse, Error> = .failure(HTTPTransportError(description: "no answer"))
        let task = session.dataTask(with: request) { data, response, error in
            if let error {
                outcome = .failure(HTTPTransportError(description: (error as NSError).localizedDescription))
            } else if let response = response as? HTTPURLResponse {
                var fields: [String: String] = [:]
                for (name, value) in response.allHeaderFields {
                    if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
                }
                outcome = .success(HTTPResponse(status: response.statusCode, headers: fields, body: data ?? Data()))
            } else {
                outcome = .failure(HTTPTransportError(description: "not an HTTP response"))
            }
            done.signal()
        }
        task.resume()
        done.wait()
        return try outcome.get()
    }

    final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            completionHandler(nil)
        }
    }
}
