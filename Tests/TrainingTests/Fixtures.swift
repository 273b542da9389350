import Foundation
import TestSupport

/// Configs for end-to-end tests: the real Fashion-MNIST files, small enough to run in seconds.
enum Fixtures {
    static let fashionDirectory = "/usr/share/datasets/fashion-mnist"

    /// The Fashion-MNIST model of configs/fashion-mnist.yaml with a small batch and many
    /// micro-batches, so that splits among workers are uneven and the tree is exercised.
    static func fashionConfig(batch: Int = 64, microBatch: Int = 8, dataPath: String = fashionDirectory,
                              extraTrain: String = "", checkpoint: String = "") -> String {
        """
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
          dataset: fashion-mnist
          path: \(dataPath)
          shuffle: true
        train:
          epochs: 1
          batch: \(batch)
          micro_batch: \(microBatch)
          seed: 7
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0001}
          eval_batch: 2000
          log_every: 5
        \(extraTrain)
        distributed:
          worker_timeout: 5
          heartbeat_interval: 0.5
          join_timeout: 30
        \(checkpoint)
        """
    }
}
