import Foundation
import TestSupport
import XCTest

/// A small run: a little CNN, few steps, on the real Fashion-MNIST files or on synthetic images.
enum Fixture {
    static let fashionDirectory = "/usr/share/datasets/fashion-mnist"
    static let testImages = fashionDirectory + "/t10k-images-idx3-ubyte.gz"

    /// The fixture config; `synthetic` swaps the data set for generated images (no files to load,
    /// 2048 training and 512 test images), for tests about processes rather than numbers.
    ///
    /// The learning rate is one at which this model learns the synthetic set without diverging
    /// over the 50 epochs the live-run tests allow (at 0.05 the loss spiked past 80 mid-run, so a
    /// scrape at the wrong moment read it).
    static func config(logEvery: Int = 5, synthetic: Bool = false) -> String {
        let data = synthetic
            ? "  dataset: synthetic\n  synthetic_train: 2048\n  synthetic_test: 512"
            : "  dataset: fashion-mnist\n  path: \(fashionDirectory)"
        return """
        model:
          input: [1, 28, 28]
          layers:
            - conv: {filters: 8, kernel: 3, padding: 1}
            - relu
            - maxpool: 2
            - conv: {filters: 16, kernel: 3, padding: 1}
            - relu
            - maxpool: 2
            - flatten
            - dense: 32
            - relu
            - dense: 10
        data:
        \(data)
          shuffle: true
        train:
          epochs: 1
          batch: 64
          micro_batch: 8
          seed: 7
          optimizer: {name: sgd, lr: 0.02, momentum: 0.9, weight_decay: 0.0001}
          eval_batch: 1000
          log_every: \(logEvery)
        distributed:
          worker_timeout: 5
          heartbeat_interval: 0.5
          join_timeout: 30
        """
    }

    /// Skips the test where the data set is not installed (scripts/setup installs it).
    static func requireData() throws {
        guard FileManager.default.fileExists(atPath: testImages) else {
            throw XCTSkip("Fashion-MNIST is not installed in \(fashionDirectory); run scripts/setup")
        }
    }

    /// A folder with the fixture config; returns (folder, config path).
    static func folder(_ label: String, config text: String = config()) throws -> (String, String) {
        let folder = try LocalCluster.temporaryDirectory(label)
        return (folder, try LocalCluster.write(text, to: "config.yaml", in: folder))
    }

    /// Polls until `condition` holds or `seconds` pass.
    static func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }
}
