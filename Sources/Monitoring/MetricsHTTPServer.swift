import Foundation

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// A small HTTP/1.1 server for Prometheus scrapes: `GET /metrics` answers the exposition text,
/// `GET /` a short pointer to it, anything else 404 (or 405 for other methods). One connection at
/// a time on one background thread, requests bounded to 8 KiB and 2 s, `Connection: close`.
/// Enough for a scraper every few seconds, and no dependency on an event-loop library.
public final class MetricsHTTPServer: @unchecked Sendable {
    // Sendable: `stopped` and `thread state` are guarded by `lock`; the socket is only closed
    // after the serving thread has finished.

    /// The address the server listens on, as given.
    public let host: String
    /// The port it listens on (the one the system chose when 0 was asked).
    public let port: Int
    /// Largest request (line and headers) read before answering 431.
    public static let maximumRequestBytes = 8192

    private let listener: Int32
    private let body: @Sendable () -> [UInt8]
    private let lock = NSLock()
    private var stopped = false
    private let finished = DispatchSemaphore(value: 0)

    /// The scrape address, for logs: `http://127.0.0.1:9464/metrics`.
    public var url: String {
        let shown = host.contains(":") ? "[\(host)]" : host
        return "http://\(shown):\(port)/metrics"
    }

    /// Binds `host:port` (port 0 picks a free one) and starts serving `body()` at /metrics.
    ///
    /// - Throws: `MonitoringError` naming the address and what to do when it cannot bind.
    public init(host: String = "127.0.0.1", port: Int, body: @escaping @Sendable () -> [UInt8]) throws {
        guard (0...65535).contains(port) else {
            throw MonitoringError("--metrics-port \(port) is not a port number; use 1-65535, or 0 for a free port")
        }
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &found)
        guard status == 0, let info = found else {
            throw MonitoringError("cannot listen on '\(host)': not a numeric IP address (\(String(cString: gai_strerror(status)))); "
                + "use 127.0.0.1 for this machine only or 0.0.0.0 for every interface")
        }
        defer { freeaddrinfo(info) }
        let descriptor = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else {
            throw MonitoringError("cannot create a socket for the metrics endpoint: \(String(cString: strerror(errno)))", kind: .runtime)
        }
        var yes: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        guard bind(descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let code = errno
            close(descriptor)
            let shown = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            switch code {
            case EADDRINUSE:
                throw MonitoringError("cannot serve metrics on \(shown): the port is in use; choose another --metrics-port (0 picks a free one)")
            case EADDRNOTAVAIL:
                throw MonitoringError("cannot serve metrics on \(shown): this machine has no such address; use one of its own addresses or 0.0.0.0")
            case EACCES:
                throw MonitoringError("cannot serve metrics on \(shown): permission denied (ports below 1024 need privileges); use a port above 1023")
            default:
                throw MonitoringError("cannot serve metrics on \(shown): \(String(cString: strerror(code)))", kind: .runtime)
            }
        }
        guard listen(descriptor, 16) == 0 else {
            let message = String(cString: strerror(errno))
            close(descriptor)
            throw MonitoringError("cannot listen for metrics scrapes: \(message)", kind: .runtime)
        }
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        let family = Int32(address.ss_family)
        let boundPort: UInt16 = withUnsafeBytes(of: address) { raw in
            if family == AF_INET6 {
                return UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
            }
            return UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
        }
        self.host = host
        self.port = Int(boundPort)
        self.listener = descriptor
        self.body = body
        let thread = Thread { [self] in serve() }
        thread.name = "metrics-http"
        thread.start()
    }

    deinit {
        stop()
    }

    /// Stops serving and closes the socket; returns once the serving thread has finished.
    public func stop() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        finished.wait()
        close(listener)
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func serve() {
        defer { finished.signal() }
        while !isStopped {
            // Poll with a timeout so that `stop` is noticed within a fraction of a second.
            var entry = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, 100)
            guard ready > 0 else { continue }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { continue }
            handle(connection)
            close(connection)
        }
    }

    private func handle(_ connection: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 2048)
        let terminator: [UInt8] = Array("\r\n\r\n".utf8)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return }
            request.append(contentsOf: chunk[0..<count])
            if request.count > MetricsHTTPServer.maximumRequestBytes {
                respond(connection, status: "431 Request Header Fields Too Large", type: "text/plain; charset=utf-8",
                        body: Array("request larger than \(MetricsHTTPServer.maximumRequestBytes) bytes\n".utf8))
                return
            }
            if request.count >= 4, containsTerminator(request, terminator) { break }
        }
        let head = String(decoding: request, as: UTF8.self)
        let requestLine = head.split(separator: "\r\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let parts = requestLine.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else {
            respond(connection, status: "400 Bad Request", type: "text/plain; charset=utf-8", body: Array("malformed request line\n".utf8))
            return
        }
        let method = parts[0]
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard method == "GET" || method == "HEAD" else {
            respond(connection, status: "405 Method Not Allowed", type: "text/plain; charset=utf-8",
                    body: Array("only GET is served\n".utf8), extraHeaders: "Allow: GET, HEAD\r\n")
            return
        }
        let headOnly = method == "HEAD"
        switch path {
        case "/metrics":
            respond(connection, status: "200 OK", type: "text/plain; version=0.0.4; charset=utf-8", body: body(), headOnly: headOnly)
        case "/":
            respond(connection, status: "200 OK", type: "text/plain; charset=utf-8",
                    body: Array("cnn-coord: Prometheus metrics at /metrics\n".utf8), headOnly: headOnly)
        default:
            respond(connection, status: "404 Not Found", type: "text/plain; charset=utf-8",
                    body: Array("not found: \(path); metrics are at /metrics\n".utf8), headOnly: headOnly)
        }
    }

    private func containsTerminator(_ bytes: [UInt8], _ terminator: [UInt8]) -> Bool {
        guard bytes.count >= terminator.count else { return false }
        for start in 0...(bytes.count - terminator.count) where bytes[start] == terminator[0] {
            if Array(bytes[start..<(start + terminator.count)]) == terminator { return true }
        }
        return false
    }

    private func respond(_ connection: Int32, status: String, type: String, body: [UInt8], headOnly: Bool = false,
                         extraHeaders: String = "") {
        let header = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\n"
            + extraHeaders + "Connection: close\r\n\r\n"
        var bytes = Array(header.utf8)
        if !headOnly { bytes += body }
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return }
            offset += sent
        }
    }
}
