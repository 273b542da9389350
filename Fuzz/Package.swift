// swift-tools-version:6.1
// A libFuzzer target for the wire decoder. It is its own package, so the main build never sees
// it; its Wire, Hashing and CZMQ folders are links to the main package's. See README.md here.
import PackageDescription

let package = Package(
    name: "cnn-fuzz",
    targets: [
        .systemLibrary(name: "CZMQ", path: "Sources/CZMQ"),
        .target(name: "Hashing", path: "Sources/Hashing"),
        .target(name: "Wire", dependencies: ["CZMQ", "Hashing"], path: "Sources/Wire"),
        .executableTarget(name: "WireDecodeFuzzer", dependencies: ["Wire"], path: "Sources/WireDecodeFuzzer"),
    ]
)
