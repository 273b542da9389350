#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension PeerMesh {
    /// Where a worker's peer listener should bind on a run without keys: `tcp://LOCALIP:0`, where
    /// LOCALIP is this host's address on the route to the coordinator's host. Workers that reach
    /// the coordinator there reach each other there too, and the listener stays off every other
    /// interface. A loopback coordinator gives 127.0.0.1; IPv6 addresses come in brackets.
    /// Throws for endpoints other than `tcp://HOST:PORT` and for hosts that do not resolve.
    public static func bindAddress(reaching coordinator: String) throws -> String {
        let operation = "peer bind address"
        guard coordinator.hasPrefix("tcp://") else {
            throw ZMQError(operation: operation, endpoint: coordinator, code: EINVAL,
                           message: "workers can reach each other only over tcp, and the coordinator's endpoint is not tcp://HOST:PORT",
                           hint: "connect the workers to the coordinator with a tcp:// endpoint (tcp://HOST:PORT) to use the peer mesh")
        }
        let (host, port) = try splitHostPort(String(coordinator.dropFirst("tcp://".count)), endpoint: coordinator)
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = datagramSocketType
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, port, &hints, &list)
        guard status == 0, let list else {
            throw ZMQError(operation: operation, endpoint: coordinator, code: EHOSTUNREACH,
                           message: "cannot resolve the coordinator's host '\(host)': \(String(cString: gai_strerror(status)))",
                           hint: "use the coordinator's IP address or a host name this machine can resolve")
        }
        defer { freeaddrinfo(list) }
        var candidates: [UnsafeMutablePointer<addrinfo>] = []
        var next: UnsafeMutablePointer<addrinfo>? = list
        while let entry = next {
            candidates.append(entry)
            next = entry.pointee.ai_next
        }
        // IPv4 first: "localhost" resolves to ::1 and 127.0.0.1, and libzmq endpoints prefer IPv4.
        candidates.sort { ($0.pointee.ai_family == AF_INET ? 0 : 1) < ($1.pointee.ai_family == AF_INET ? 0 : 1) }
        var lastError: Int32 = 0
        for entry in candidates {
            if let local = localAddress(toward: entry.pointee) { return "tcp://\(local):0" }
            lastError = errno
        }
        throw ZMQError(operation: operation, endpoint: coordinator, code: lastError == 0 ? EHOSTUNREACH : lastError,
                       message: "this host has no route to the coordinator's host '\(host)' (\(String(cString: strerror(lastError))))",
                       hint: "check the network between this worker and the coordinator")
    }

    /// HOST and PORT of `HOST:PORT` or `[V6]:PORT`.
    private static func splitHostPort(_ text: String, endpoint: String) throws -> (String, String) {
        var host = Substring(text)
        var port: Substring = ""
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            let rest = host[host.index(after: close)...]
            port = rest.hasPrefix(":") ? rest.dropFirst() : ""
            host = host[host.index(after: host.startIndex)..<close]
        } else if let colon = host.lastIndex(of: ":") {
            port = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        // libzmq allows "tcp://interface;host:port" (a source address); the host is what we route to.
        if let semicolon = host.lastIndex(of: ";") { host = host[host.index(after: semicolon)...] }
        guard !host.isEmpty, !port.isEmpty, port.allSatisfy(\.isNumber) else {
            throw ZMQError(operation: "peer bind address", endpoint: endpoint, code: EINVAL,
                           message: "expected tcp://HOST:PORT (an IPv6 host in brackets)",
                           hint: "give the coordinator's endpoint as tcp://HOST:PORT, for example tcp://10.0.0.2:5555")
        }
        return (String(host), String(port))
    }

    /// The local address the kernel picks for datagrams to `target`, as text (IPv6 in brackets),
    /// or nil (errno set). A UDP `connect` sends nothing: it only chooses the route.
    private static func localAddress(toward target: addrinfo) -> String? {
        let descriptor = socket(target.ai_family, target.ai_socktype, target.ai_protocol)
        guard descriptor >= 0 else { return nil }
        defer { closeDescriptor(descriptor) }
        guard connect(descriptor, target.ai_addr, target.ai_addrlen) == 0 else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            var address = withUnsafeBytes(of: storage) { $0.loadUnaligned(as: sockaddr_in.self) }.sin_addr
            guard inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil else { return nil }
            return nulTerminated(text)
        case AF_INET6:
            let ipv6 = withUnsafeBytes(of: storage) { $0.loadUnaligned(as: sockaddr_in6.self) }
            var address = ipv6.sin6_addr
            guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { return nil }
            // A link-local address needs its interface to be usable.
            let scope = ipv6.sin6_scope_id == 0 ? "" : "%\(ipv6.sin6_scope_id)"
            return "[\(nulTerminated(text))\(scope)]"
        default:
            errno = EAFNOSUPPORT
            return nil
        }
    }
}

#if canImport(Glibc)
private let datagramSocketType = Int32(SOCK_DGRAM.rawValue)
#else
private let datagramSocketType = SOCK_DGRAM
#endif

/// `close(2)`, out of reach of `PeerMesh.close()`.
private func closeDescriptor(_ descriptor: Int32) {
    _ = close(descriptor)
}

/// The text of a NUL-terminated C string buffer.
private func nulTerminated(_ characters: [CChar]) -> String {
    String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
