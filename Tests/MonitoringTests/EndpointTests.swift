import Foundation
import Monitoring
import XCTest

final class EndpointTests: XCTestCase {
    /// A port nothing listens on: bound, then closed.
    static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                bind(descriptor, pointer, length)
                return getsockname(descriptor, pointer, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func testARefusedPortIsReportedAsNothingListeningWithTheFix() {
        let port = Self.freePort()
        guard case .unreachable(let reason) = EndpointProbe.check("tcp://127.0.0.1:\(port)") else {
            return XCTFail("a closed port must be unreachable")
        }
        XCTAssertTrue(reason.contains("127.0.0.1:\(port)"), reason)
        XCTAssertTrue(reason.contains("connection refused: nothing listens there"), reason)
        XCTAssertTrue(reason.contains("Is cnn-coord running on this machine"), reason)
    }

    func testAListeningPortIsReachable() throws {
        let server = try MetricsHTTPServer(port: 0) { [] }
        defer { server.stop() }
        XCTAssertEqual(EndpointProbe.check("tcp://127.0.0.1:\(server.port)"), .reachable)
        XCTAssertEqual(EndpointProbe.check("tcp://localhost:\(server.port)"), .reachable)
    }

    func testAddressesThatCannotBeConnectedToAreExplained() {
        guard case .unreachable(let wildcard) = EndpointProbe.check("tcp://0.0.0.0:5555") else { return XCTFail() }
        XCTAssertTrue(wildcard.contains("listening address"), wildcard)
        guard case .unchecked(let portless) = EndpointProbe.check("tcp://10.0.0.1") else { return XCTFail() }
        XCTAssertTrue(portless.contains("has no port"), portless)
        guard case .unreachable(let ipc) = EndpointProbe.check("ipc:///tmp/no-such-cnn-socket") else { return XCTFail() }
        XCTAssertTrue(ipc.contains("no socket file"), ipc)
    }

    func testAWildcardBindBecomesOneCommandPerInterfaceAddress() {
        XCTAssertEqual(WorkerCommandLines.commands(forBoundEndpoint: "tcp://0.0.0.0:41234", interfaceAddresses: ["127.0.0.1", "10.1.2.3", "192.168.0.7"]),
                       ["cnn-worker --connect tcp://10.1.2.3:41234", "cnn-worker --connect tcp://192.168.0.7:41234",
                        "cnn-worker --connect tcp://127.0.0.1:41234"])
        XCTAssertEqual(WorkerCommandLines.commands(forBoundEndpoint: "tcp://10.0.0.5:5555"), ["cnn-worker --connect tcp://10.0.0.5:5555"])
        XCTAssertTrue(WorkerCommandLines.interfaceAddresses().contains("127.0.0.1"))
    }
}
