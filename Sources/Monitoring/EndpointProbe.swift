import Foundation

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// Says why a coordinator address cannot be reached, in words a user can act on. ZeroMQ
/// reconnects silently forever, so a worker that is never welcomed learns nothing from it; a
/// plain TCP connection to the same address tells refusal, no route, and silence apart.
public enum EndpointProbe {
    /// What a probe found.
    public enum Outcome: Sendable, Equatable {
        /// Something accepts connections there (maybe not a coordinator).
        case reachable
        /// It cannot be reached; the text says why and what to check.
        case unreachable(String)
        /// The address is of a kind a TCP probe cannot check (inproc, malformed).
        case unchecked(String)
    }

    /// Tries one TCP connection to a `tcp://HOST:PORT` endpoint (or checks an `ipc://` socket file).
    public static func check(_ endpoint: String, timeout: Double = 2) -> Outcome {
        if endpoint.hasPrefix("ipc://") {
            let path = String(endpoint.dropFirst("ipc://".count))
            var status = stat()
            guard stat(path, &status) == 0 else {
                return .unreachable("\(endpoint): no socket file at \(path); is cnn-coord running on this machine with --bind \(endpoint)?")
            }
            return (status.st_mode & S_IFMT) == S_IFSOCK ? .reachable : .unreachable("\(endpoint): \(path) exists but is not a socket")
        }
        guard endpoint.hasPrefix("tcp://") else {
            return .unchecked("\(endpoint) is not a tcp:// or ipc:// address; give the coordinator's address as tcp://HOST:PORT")
        }
        let rest = endpoint.dropFirst("tcp://".count)
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
            return .unchecked("\(endpoint) has no port; give it as tcp://HOST:PORT (cnn-coord prints the exact address)")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "*" || host == "0.0.0.0" || host == "::" {
            return .unreachable("\(endpoint) is a listening address, not one to connect to; use the coordinator's host name or IP address")
        }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &found)
        guard status == 0, let list = found else {
            return .unreachable("cannot resolve '\(host)' (\(String(cString: gai_strerror(status)))); check the host name, or use an IP address")
        }
        defer { freeaddrinfo(list) }
        var reasons: [String] = []
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let info = entry {
            switch attemptConnection(info, timeout: timeout) {
            case .success:
                return .reachable
            case .failure(let reason):
                reasons.append("\(numericAddress(info)):\(port): \(reason)")
            }
            entry = info.pointee.ai_next
        }
        return .unreachable(reasons.joined(separator: "; "))
    }

    private enum Attempt {
        case success
        case failure(String)
    }

    private static func attemptConnection(_ info: UnsafeMutablePointer<addrinfo>, timeout: Double) -> Attempt {
        let descriptor = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return .failure("cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        let flags = fcntl(descriptor, F_GETFL, 0)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
        var code: Int32 = 0
        if connect(descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen) != 0 {
            code = errno
            if code == EINPROGRESS {
                var entry = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&entry, 1, Int32(timeout * 1000))
                if ready == 0 {
                    return .failure("no answer within \(Format.duration(timeout)): the host is down, or a firewall drops the packets "
                        + "(check that the port is open between the two hosts)")
                }
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length)
                code = error
            }
        }
        switch code {
        case 0:
            return .success
        case ECONNREFUSED:
            if isLoopback(info) {
                return .failure("connection refused: nothing listens there. Is cnn-coord running on this machine, "
                    + "and is the port the one it printed?")
            }
            return .failure("connection refused: nothing listens there. Is cnn-coord running, with --bind on an address "
                + "this host can reach (tcp://0.0.0.0:PORT or its own IP, not 127.0.0.1), and is the port right?")
        case EHOSTUNREACH, ENETUNREACH:
            return .failure("\(String(cString: strerror(code))): no route from this host to that address; check the address "
                + "and the network between the hosts")
        case ETIMEDOUT:
            return .failure("connection timed out: the host is down, or a firewall drops the packets")
        default:
            return .failure(String(cString: strerror(code)))
        }
    }

    private static func isLoopback(_ info: UnsafeMutablePointer<addrinfo>) -> Bool {
        let address = numericAddress(info)
        return address.hasPrefix("127.") || address == "[::1]"
    }

    private static func numericAddress(_ info: UnsafeMutablePointer<addrinfo>) -> String {
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 else {
            return "?"
        }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return info.pointee.ai_family == AF_INET6 ? "[\(text)]" : text
    }
}

/// The exact `cnn-worker --connect` commands for a coordinator's bound endpoint. A wildcard bind
/// (`tcp://0.0.0.0:PORT`, `tcp://*:PORT`) is not an address a worker can connect to, so it is
/// expanded into one command per address of this machine's network interfaces.
public enum WorkerCommandLines {
    /// One command per reachable address of `endpoint` (loopback last).
    public static func commands(forBoundEndpoint endpoint: String, interfaceAddresses: [String]? = nil) -> [String] {
        guard endpoint.hasPrefix("tcp://") else { return ["cnn-worker --connect \(endpoint)"] }
        let rest = endpoint.dropFirst("tcp://".count)
        guard let colon = rest.lastIndex(of: ":") else { return ["cnn-worker --connect \(endpoint)"] }
        let host = String(rest[..<colon]), port = String(rest[rest.index(after: colon)...])
        guard host == "0.0.0.0" || host == "*" || host == "[::]" || host == "::" else {
            return ["cnn-worker --connect \(endpoint)"]
        }
        let addresses = interfaceAddresses ?? WorkerCommandLines.interfaceAddresses()
        let sorted = addresses.filter { !$0.hasPrefix("127.") } + addresses.filter { $0.hasPrefix("127.") }
        let list = sorted.isEmpty ? ["127.0.0.1"] : sorted
        return list.map { "cnn-worker --connect tcp://\($0):\(port)" }
    }

    /// The text for `worker-command.txt` and the log: the commands, one per line.
    public static func text(forBoundEndpoint endpoint: String) -> String {
        commands(forBoundEndpoint: endpoint).joined(separator: "\n") + "\n"
    }

    /// IPv4 addresses of this machine's interfaces that are up.
    public static func interfaceAddresses() -> [String] {
        var first: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&first) == 0, let list = first else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [String] = []
        var entry: UnsafeMutablePointer<ifaddrs>? = list
        while let interface = entry {
            defer { entry = interface.pointee.ifa_next }
            guard let address = interface.pointee.ifa_addr, Int32(address.pointee.sa_family) == AF_INET,
                  (interface.pointee.ifa_flags & UInt32(IFF_UP)) != 0 else { continue }
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            guard getnameinfo(address, socklen_t(MemoryLayout<sockaddr_in>.size), &buffer, socklen_t(buffer.count), nil, 0,
                              NI_NUMERICHOST) == 0 else { continue }
            let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !addresses.contains(text) { addresses.append(text) }
        }
        return addresses
    }
}
