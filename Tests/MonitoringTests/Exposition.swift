import Foundation
import XCTest

/// A strict reader of Prometheus's text exposition format (version 0.0.4), for checking what the
/// endpoint serves: every sample line parses, belongs to a family declared by `# TYPE` before it,
/// histogram buckets never decrease and end in `+Inf` equal to `_count`.
struct Exposition {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    var types: [String: String] = [:]
    var help: [String: String] = [:]
    var samples: [Sample] = []

    init(_ text: String) throws {
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                    throw Failure("line \(number + 1): bad TYPE line: \(line)")
                }
                types[String(parts[2])] = String(parts[3])
            } else if line.hasPrefix("# HELP ") {
                let parts = line.split(separator: " ", maxSplits: 3)
                guard parts.count == 4 else { throw Failure("line \(number + 1): bad HELP line: \(line)") }
                help[String(parts[2])] = String(parts[3])
            } else if line.hasPrefix("#") {
                continue
            } else {
                samples.append(try Exposition.sample(String(line), number: number + 1))
            }
        }
        for sample in samples {
            guard types[family(of: sample.name)] != nil else { throw Failure("\(sample.name) has no # TYPE line before it") }
        }
        for (name, type) in types where type == "histogram" {
            for labels in Set(samples.filter { $0.name == name + "_count" }.map { $0.labels }) {
                let buckets = samples.filter { $0.name == name + "_bucket" && $0.labels.filter { $0.key != "le" } == labels }
                let sorted = buckets.sorted { (Double($0.labels["le"]!) ?? .infinity) < (Double($1.labels["le"]!) ?? .infinity) }
                guard let last = sorted.last, last.labels["le"] == "+Inf" else { throw Failure("\(name) has no +Inf bucket") }
                for (a, b) in zip(sorted, sorted.dropFirst()) where b.value < a.value {
                    throw Failure("\(name) bucket le=\(b.labels["le"]!) holds fewer than le=\(a.labels["le"]!)")
                }
                let count = samples.first { $0.name == name + "_count" && $0.labels == labels }!.value
                guard last.value == count else { throw Failure("\(name): +Inf bucket \(last.value) differs from _count \(count)") }
            }
        }
    }

    func family(of name: String) -> String {
        for suffix in ["_bucket", "_count", "_sum"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" { return base }
        }
        return name
    }

    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    private static func sample(_ line: String, number: Int) throws -> Sample {
        var rest = Substring(line)
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
        guard !name.isEmpty, !name.first!.isNumber else { throw Failure("line \(number): no metric name: \(line)") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let key = rest.prefix { $0 != "=" }
                rest = rest.dropFirst(key.count)
                guard rest.hasPrefix("=\"") else { throw Failure("line \(number): bad label in \(line)") }
                rest = rest.dropFirst(2)
                var value = ""
                while let character = rest.first, character != "\"" {
                    if character == "\\" {
                        rest = rest.dropFirst()
                        guard let escaped = rest.first else { throw Failure("line \(number): dangling escape") }
                        value.append(escaped == "n" ? "\n" : escaped)
                    } else {
                        value.append(character)
                    }
                    rest = rest.dropFirst()
                }
                guard rest.first == "\"" else { throw Failure("line \(number): unterminated label value") }
                rest = rest.dropFirst()
                labels[String(key)] = value
                if rest.first == "," { rest = rest.dropFirst() }
                guard !rest.isEmpty else { throw Failure("line \(number): unterminated labels") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw Failure("line \(number): no space before the value: \(line)") }
        let valueText = rest.dropFirst().split(separator: " ").first.map(String.init) ?? ""
        let value: Double
        switch valueText {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let parsed = Double(valueText) else { throw Failure("line \(number): value '\(valueText)' is not a number") }
            value = parsed
        }
        return Sample(name: String(name), labels: labels, value: value)
    }
}

/// A plain HTTP/1.1 exchange over a POSIX socket, as a scraper makes it.
enum HTTP {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    static func request(port: Int, _ raw: String, host: String = "127.0.0.1") throws -> Response {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Exposition.Failure("socket failed") }
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Exposition.Failure("cannot connect to \(host):\(port): \(String(cString: strerror(errno)))") }
        let bytes = Array(raw.utf8)
        _ = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var received = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            received += chunk[0..<count]
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw Exposition.Failure("no header end in response: \(text)") }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, statusParts[0] == "HTTP/1.1", let status = Int(statusParts[1]) else {
            throw Exposition.Failure("bad status line: \(head[0])")
        }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Response(status: status, headers: headers, body: String(text[split.upperBound...]))
    }

    static func get(port: Int, path: String) throws -> Response {
        try request(port: port, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
    }
}
