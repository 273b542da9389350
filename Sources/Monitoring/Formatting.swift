import Foundation

/// Human-readable numbers for displays and reports.
enum Format {
    /// "0.4231"
    static func fixed(_ value: Double, _ digits: Int) -> String {
        value.isFinite ? String(format: "%.\(digits)f", value) : "-"
    }

    /// "85.94%" from 0.8594.
    static func percent(_ fraction: Double, digits: Int = 2) -> String {
        fraction.isFinite ? String(format: "%.\(digits)f%%", fraction * 100) : "-"
    }

    /// "950 ms", "12.3 s", "4m05s", "2h03m": short enough for a status line, precise where it matters.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "-" }
        if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
        if seconds < 60 { return String(format: "%.1f s", seconds) }
        let whole = Int(seconds.rounded())
        if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
        return String(format: "%dh%02dm", whole / 3600, (whole % 3600) / 60)
    }

    /// Milliseconds with one decimal: "23.4 ms".
    static func milliseconds(_ seconds: Double) -> String {
        seconds.isFinite ? String(format: "%.1f ms", seconds * 1000) : "-"
    }

    /// "1.2 MB", "340 kB", "12 B" (decimal units, as network rates are usually given).
    static func bytes(_ count: Double) -> String {
        if count >= 1e9 { return String(format: "%.2f GB", count / 1e9) }
        if count >= 1e6 { return String(format: "%.1f MB", count / 1e6) }
        if count >= 1e3 { return String(format: "%.0f kB", count / 1e3) }
        return String(format: "%.0f B", count)
    }

    /// Pads or cuts `text` to exactly `width` characters.
    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? String(text.prefix(width)) : text + String(repeating: " ", count: width - text.count)
    }

    /// Right-aligns `text` in `width` characters.
    static func padLeft(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}

/// Recent steps, for throughput and the time left. Rates come from wall-clock time between step
/// ends, so they include everything the run spends between steps (evaluations, checkpoints).
public struct RecentSteps: Sendable {
    private var ends: [Double] = []
    private var samples: [Int] = []
    private var seconds: [Double] = []
    /// How many steps the window holds.
    public let capacity: Int

    public init(capacity: Int = 20) {
        self.capacity = max(capacity, 2)
    }

    /// Records a step that ended at `end` (monotonic seconds), took `seconds`, and trained `samples` images.
    public mutating func add(end: Double, seconds: Double, samples: Int) {
        ends.append(end)
        self.samples.append(samples)
        self.seconds.append(seconds)
        if ends.count > capacity {
            ends.removeFirst()
            self.samples.removeFirst()
            self.seconds.removeFirst()
        }
    }

    public var isEmpty: Bool { ends.isEmpty }

    /// Images per second over the window: the images of every step after the first, over the time
    /// from the first step's end to the last one's (with one step: its images over its duration).
    public var imagesPerSecond: Double? {
        guard let last = ends.last else { return nil }
        if ends.count == 1 { return seconds[0] > 0 ? Double(samples[0]) / seconds[0] : nil }
        let span = last - ends[0]
        guard span > 0 else { return nil }
        return Double(samples.dropFirst().reduce(0, +)) / span
    }

    /// Wall-clock seconds per step over the window.
    public var secondsPerStep: Double? {
        guard let last = ends.last else { return nil }
        if ends.count == 1 { return seconds[0] }
        return (last - ends[0]) / Double(ends.count - 1)
    }

    /// Seconds until `remaining` more steps are done at the window's pace.
    public func estimatedSeconds(remaining: Int) -> Double? {
        guard let perStep = secondsPerStep else { return nil }
        return perStep * Double(max(remaining, 0))
    }
}
