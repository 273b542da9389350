// swift-tools-version:6.1
import PackageDescription

// The engine's hot loops are plain Swift; without the optimiser they run 10-50x slower,
// which would make even debug test runs of real training crawl.
//
// CNN_TARGET_CPU=native (or a CPU name, such as znver4) when building lets the compiler use that
// CPU's vector instructions in those loops: AVX-512 on these machines, where LeNet-5 trains 4-12%
// faster, the same bits. The binaries then run only on CPUs that have them; by default they run
// on any x86-64 (or arm64) CPU.
let targetCPU = Context.environment["CNN_TARGET_CPU"].map { ["-target-cpu", $0] } ?? []
let optimised: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"] + targetCPU)]
    + (targetCPU.isEmpty ? [] : [.define("CNN_CPU_SPECIFIC")])
// What parses, schedules, reduces or indexes by values a peer sent keeps its overflow and bounds
// checks: a hostile value must trap (or be refused), never wrap or read past an array. Its loops
// over tensors run on unsafe pointers, which the checks do not touch.
let optimisedChecked: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "cnn",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cnn-coord", targets: ["cnn-coord"]),
        .executable(name: "cnn-worker", targets: ["cnn-worker"]),
        .executable(name: "cnn", targets: ["cnn"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // System libraries, linked plainly from module maps (see shared FACTS: pkg-config for
        // libzmq adds flags SwiftPM refuses).
        .systemLibrary(name: "CZMQ", path: "Sources/CZMQ"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .systemLibrary(name: "COneDNN", path: "Sources/COneDNN"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        // libjpeg-turbo's TurboJPEG API (Debian: libturbojpeg0-dev), for folders of JPEG images.
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG"),
        .systemLibrary(name: "CNonTemporal", path: "Sources/CNonTemporal"),
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),

        .target(name: "Randomness", swiftSettings: optimised),
        .target(name: "CNN", dependencies: ["COpenBLAS", "COneDNN", "CNonTemporal", "Randomness"], swiftSettings: optimised),
        .target(name: "Data", dependencies: ["Randomness", "CZlib", "CPNG", "CJPEG", "UsageErrors"], swiftSettings: optimised),
        .target(name: "Hashing", swiftSettings: optimised),
        // The one writer of JSON text (metrics lines, bench lines, traces, safetensors headers).
        .target(name: "JSONWriting"),
        .target(name: "Checkpoint", dependencies: ["Hashing", "JSONWriting"]),
        .target(name: "Wire", dependencies: ["CZMQ", "Hashing"], swiftSettings: optimisedChecked),
        .target(name: "AllReduce", dependencies: ["Wire"], swiftSettings: optimisedChecked),
        // Errors that mean the program was used wrongly (exit code 2), for libraries to throw.
        .target(name: "UsageErrors"),
        // Reading YAML configs with errors that say file:line, what and the fix.
        .target(name: "ConfigReading", dependencies: [.product(name: "Yams", package: "Yams")]),
        // CURVE keys and key files, bind and authorisation policy, per-peer limits. (Not named
        // Security: that is a system framework on Apple platforms.)
        .target(name: "PeerSecurity", dependencies: ["Wire", "UsageErrors", .product(name: "Logging", package: "swift-log")]),
        // What a model is: layer lists, arrow notation, the zoo, and its summary.
        .target(
            name: "ModelDescription",
            dependencies: ["CNN", "ConfigReading", .product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "Training",
            dependencies: [
                "CNN", "Data", "Checkpoint", "Wire", "AllReduce",
                "ConfigReading", "ModelDescription", "PeerSecurity", "UsageErrors", "JSONWriting",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: optimisedChecked
        ),
        // `cnn bench`: training throughput, convolution layers against sgemm, training memory.
        .target(
            name: "Benchmark",
            dependencies: ["Training", "ModelDescription", "CNN", "Data", "AllReduce", "Hashing"],
            swiftSettings: optimised
        ),
        // ONNX's schema (onnx.proto of onnx 1.23.2) as Swift, generated once by
        // scripts/generate-onnx-swift and committed; only SwiftProtobuf's runtime is linked.
        .target(
            name: "ONNXSchema", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")], exclude: ["onnx.proto"]),
        // `cnn export`: a network as an ONNX inference graph.
        .target(
            name: "ModelExport",
            dependencies: ["CNN", "ONNXSchema", "UsageErrors", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // Progress display, Prometheus endpoint, traces, plots, prediction: what operators see.
        .target(
            name: "Monitoring",
            dependencies: [
                "Training", "UsageErrors", "JSONWriting", "CNN", "Data", "Checkpoint", "CPNG",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // What only the executables use: exit codes from errors, and process start-up (which may
        // execute the program again). Libraries throw; only this module and the executables exit.
        .target(
            name: "CommandLineSupport",
            dependencies: [
                "Training", "UsageErrors", "ConfigReading", "CNN", "Data", "Checkpoint", "CMalloc",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "cnn-coord",
            dependencies: ["Training", "PeerSecurity", "Monitoring", "CommandLineSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "cnn-worker",
            dependencies: ["Training", "PeerSecurity", "Monitoring", "CommandLineSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "cnn",
            dependencies: ["Training", "ModelDescription", "PeerSecurity", "Benchmark", "Monitoring", "CommandLineSupport", "JSONWriting", "ModelExport", "Checkpoint", "Data", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        .target(name: "TestSupport", dependencies: ["CNN", "Randomness", "Data"], path: "Tests/TestSupport", swiftSettings: optimised),
        .testTarget(name: "CNNTests", dependencies: ["CNN", "TestSupport"]),
        .testTarget(name: "DataTests", dependencies: ["Data", "TestSupport"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "Hashing"]),
        .testTarget(
            name: "ModelExportTests",
            dependencies: ["ModelExport", "ModelDescription", "Training", "Checkpoint", "CNN", "TestSupport", "ONNXSchema", "Randomness"]),
        .testTarget(name: "HashingTests", dependencies: ["Hashing"]),
        .testTarget(name: "WireTests", dependencies: ["Wire"]),
        .testTarget(name: "AllReduceTests", dependencies: ["AllReduce"]),
        .testTarget(name: "LayerConfigTests", dependencies: ["Training", "ConfigReading", "CNN"]),
        .testTarget(
            name: "MonitoringTests",
            dependencies: [
                "Monitoring", "Training", "CommandLineSupport", "TestSupport", "CNN", "Checkpoint", "Data",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(
            name: "TrainingTests",
            dependencies: [
                "Training", "ModelDescription", "ConfigReading", "PeerSecurity", "TestSupport", "CNN", "Checkpoint", "Data", "AllReduce", "Wire",
                "Hashing", .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
