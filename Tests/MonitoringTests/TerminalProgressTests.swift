import CNN
import Monitoring
import Training
import XCTest

final class TerminalProgressTests: XCTestCase {
    func testStatusShowsEpochStepRateLossAccuracyETAAndOneLinePerWorker() {
        let recorder = ScreenRecorder()
        let clock = ManualClock()
        let observer = TerminalProgressObserver(screen: recorder.screen(), minimumInterval: 0, clock: clock.read)
        observer.runStarted(Reports.start(epochs: 2, stepsPerEpoch: 100))
        observer.workerJoined(Reports.worker(0))
        observer.workerJoined(Reports.worker(1))
        // Ten steps of 64 images, one every 0.5 s: 128 images/s; 190 steps left take 95 s.
        for step in 1...10 {
            observer.stepFinished(Reports.step(step, start: Double(step) * 0.5 - 0.4, seconds: 0.4,
                                               workers: [Reports.worker(0, done: step * 4, last: 0.35), Reports.worker(1, done: step * 4, last: 0.38)]))
        }
        let lines = observer.lines
        XCTAssertEqual(lines.count, 5, lines.joined(separator: "\n"))
        XCTAssertTrue(lines[0].hasPrefix("epoch 1/2  step 10/100  ["), lines[0])
        XCTAssertTrue(lines[0].contains("5.0%  (10/200 steps)"), lines[0])
        XCTAssertTrue(lines[1].contains("loss 0.5000"), lines[1])
        XCTAssertTrue(lines[1].contains("accuracy 75.00%"), lines[1])
        XCTAssertTrue(lines[1].contains("128 img/s"), lines[1])
        XCTAssertTrue(lines[1].contains("ETA 1m35s"), lines[1])
        XCTAssertEqual(lines[2], "workers: 2 alive")
        XCTAssertTrue(lines[3].contains("w0") && lines[3].contains("alive") && lines[3].contains("40 micro-batches")
            && lines[3].contains("last step 350.0 ms"), lines[3])
        XCTAssertTrue(lines[4].contains("w1") && lines[4].contains("last step 380.0 ms"), lines[4])
    }

    func testTopFiveIsShownBesideTopOneOnlyWithMoreThanFiveClasses() {
        for (classes, shown) in [(10, true), (5, false)] {
            let recorder = ScreenRecorder()
            let observer = TerminalProgressObserver(screen: recorder.screen(), minimumInterval: 0, clock: ManualClock().read)
            observer.runStarted(Reports.start(classes: classes))
            observer.stepFinished(Reports.step(1, start: 0, seconds: 0.4))
            observer.evaluationFinished(step: 1, epoch: 0, score: BatchScore(lossSum: 10, correct: 80, topFiveCorrect: 97, samples: 100))
            let figures = observer.lines[1]
            XCTAssertEqual(figures.contains("top-5 93.75%"), shown, figures)
            XCTAssertEqual(figures.contains("test top-5 97.00%"), shown, figures)
        }
    }

    func testWorkerThatLeftIsShownGoneWithItsReason() {
        let recorder = ScreenRecorder()
        let observer = TerminalProgressObserver(screen: recorder.screen(), minimumInterval: 0)
        observer.runStarted(Reports.start())
        observer.workerJoined(Reports.worker(0))
        observer.workerJoined(Reports.worker(1))
        observer.workerLeft(Reports.worker(1, done: 12), reason: "silent for 5.2 s")
        let lines = observer.lines
        XCTAssertEqual(lines[2], "workers: 1 alive, 1 gone")
        XCTAssertTrue(lines[4].contains("gone") && lines[4].contains("(silent for 5.2 s)") && lines[4].contains("12 micro-batches"), lines[4])
    }

    func testRedrawReturnsToTheBlockStartAndLogLinesAppearAboveIt() {
        let recorder = ScreenRecorder()
        let screen = recorder.screen()
        screen.show(["one", "two", "three"])
        screen.show(["four", "five"])
        screen.print("a log line", to: .error)
        let writes = recorder.all
        XCTAssertEqual(writes[0].1, "one\ntwo\nthree\n")
        // Up three rows to where the old block began, erase to the end, draw the new block.
        XCTAssertEqual(writes[1].1, "\u{1B}[3A\r\u{1B}[Jfour\nfive\n")
        // A log line: erase the block (on standard output), the line on standard error, the block again.
        XCTAssertEqual(writes[2].0, .output)
        XCTAssertEqual(writes[2].1, "\u{1B}[2A\r\u{1B}[J")
        XCTAssertEqual(writes[3].0, .error)
        XCTAssertEqual(writes[3].1, "a log line\n")
        XCTAssertEqual(writes[4].1, "four\nfive\n")
    }

    func testLinesLongerThanTheTerminalAreCutKeepingColourCodesIntact() {
        let recorder = ScreenRecorder()
        let screen = recorder.screen(width: 21)
        screen.show(["\u{1B}[32malive\u{1B}[0m and a line far longer than twenty columns"])
        let drawn = recorder.output.dropLast()
        XCTAssertTrue(drawn.hasPrefix("\u{1B}[32malive\u{1B}[0m and a line fa"), String(drawn))
        XCTAssertTrue(drawn.hasSuffix("\u{1B}[0m"), String(drawn))
        let visible = drawn.replacingOccurrences(of: "\u{1B}\\[[0-9;]*[A-Za-z]", with: "", options: .regularExpression)
        XCTAssertEqual(visible.count, 20)
    }

    func testRedrawsAreRateLimitedButEpochEndsAndTheEndAlwaysDraw() {
        let recorder = ScreenRecorder()
        let clock = ManualClock()
        let observer = TerminalProgressObserver(screen: recorder.screen(), minimumInterval: 1, clock: clock.read)
        observer.runStarted(Reports.start(epochs: 1, stepsPerEpoch: 4))
        let afterStart = recorder.all.count
        observer.stepFinished(Reports.step(1, start: 0, seconds: 0.1, stepsPerEpoch: 4))
        observer.stepFinished(Reports.step(2, start: 0.1, seconds: 0.1, stepsPerEpoch: 4))
        XCTAssertEqual(recorder.all.count, afterStart, "steps within the interval must not redraw")
        observer.stepFinished(Reports.step(4, start: 0.3, seconds: 0.1, stepsPerEpoch: 4))
        XCTAssertEqual(recorder.all.count, afterStart + 1, "the last step of an epoch always redraws")
        observer.evaluationFinished(step: 4, epoch: 0, score: BatchScore(lossSum: 40, correct: 85, samples: 100))
        observer.runFinished(Reports.summary(steps: 4, accuracy: 0.85))
        let output = recorder.output
        XCTAssertTrue(output.contains("epoch 1 step 4: test accuracy 85.00% (loss 0.4000, 100 images)\n"), output)
        XCTAssertTrue(output.hasSuffix("done: 4 steps, 1234 images/s, test accuracy 85.00%; checkpoint /tmp/run/checkpoints/step-1\n"), output)
        XCTAssertTrue(observer.lines[1].contains("test 85.00%"), observer.lines[1])
    }

    func testLogLevelFollowsQuietAndVerbose() {
        XCTAssertEqual(logLevel(quiet: false, verbose: false), .info)
        XCTAssertEqual(logLevel(quiet: true, verbose: false), .warning)
        XCTAssertEqual(logLevel(quiet: false, verbose: true), .debug)
        let recorder = ScreenRecorder()
        let screen = recorder.screen()
        screen.show(["status"])
        let logger = makeLogger(label: "coord", level: .info, screen: screen)
        logger.debug("hidden")
        logger.warning("step 3: worker w1 is gone")
        XCTAssertEqual(recorder.error, "[coord] warning: step 3: worker w1 is gone\n")
        XCTAssertTrue(recorder.output.hasSuffix("status\n"), "the status block is drawn again below the log line")
    }
}
