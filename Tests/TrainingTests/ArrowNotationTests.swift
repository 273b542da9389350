import CNN
import ConfigReading
import ModelDescription
import Training
import XCTest

final class ArrowNotationTests: XCTestCase {
    private func resolve(_ text: String, input: FeatureShape? = nil, variables: [String: Double] = [:],
                         optional: OptionalLayers = .include) throws -> ModelSpec {
        try ArrowModel.parse(text).resolve(input: input, variables: variables, optional: optional)
    }

    private func notationError(_ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> ArrowNotationError? {
        do {
            _ = try body()
            XCTFail("expected an arrow notation error", file: file, line: line)
        } catch let error as ArrowNotationError {
            return error
        } catch {
            XCTFail("expected an ArrowNotationError, got \(error)", file: file, line: line)
        }
        return nil
    }

    private func conv(_ filters: Int, _ kernel: Int, padding: Int = 0, stride: Int = 1) -> LayerSpec {
        .convolution(ConvolutionSpec(filters: filters, kernel: kernel, stride: stride, padding: .explicit(padding)))
    }

    func testTheIssuesExampleResolvesToTheExpectedLayers() throws {
        let spec = try resolve("INPUT(1,28,28) => [CONV(32,3,p=1) => RELU => POOL(2)] * 2 => FC(128) => RELU => DO(0.5) => FC(10)")
        XCTAssertEqual(spec.input, FeatureShape(channels: 1, height: 28, width: 28))
        let pool = LayerSpec.maxPool(size: 2, stride: nil, padding: 0)
        XCTAssertEqual(spec.layers, [
            conv(32, 3, padding: 1), .relu, pool, conv(32, 3, padding: 1), .relu, pool,
            .flatten, .dense(units: 128, bias: true), .relu, .dropout(probability: 0.5), .dense(units: 10, bias: true),
        ])
        let network = try Network(spec)
        XCTAssertEqual(network.parameterCount, (9 * 32 + 32) + (9 * 32 * 32 + 32) + (32 * 7 * 7 * 128 + 128) + (128 * 10 + 10))
    }

    func testTheLiteraturePatternRepeatsNestedGroupsWithVariables() throws {
        let text = "INPUT => [[CONV(F,3,p=1) => RELU]*N => POOL?]*M => [FC(H) => RELU]*K => FC(10)"
        let input = FeatureShape(channels: 3, height: 32, width: 32)
        let spec = try resolve(text, input: input, variables: ["N": 2, "M": 3, "K": 2, "F": 8, "H": 64])
        let kinds = spec.layers.map { layer -> String in
            switch layer {
            case .convolution: return "C"
            case .relu: return "R"
            case .maxPool: return "P"
            case .flatten: return "F"
            case .dense: return "D"
            default: return "?"
            }
        }.joined()
        XCTAssertEqual(kinds, "CRCRP" + "CRCRP" + "CRCRP" + "F" + "DRDR" + "D")
        XCTAssertEqual(try Network(spec).layers[14].outputShape, FeatureShape(channels: 8, height: 4, width: 4))
        // Without the optional pools, and with K = 0 (no hidden FC layers).
        let plain = try resolve(text, input: input, variables: ["N": 1, "M": 2, "K": 0, "F": 4, "H": 64], optional: .omit)
        XCTAssertEqual(plain.layers.count, 2 * 2 + 2)
        XCTAssertEqual(plain.layers.last, .dense(units: 10, bias: true))
    }

    func testOptionalLayersThatNoLongerFitAreLeftOutWithFit() throws {
        let spec = try resolve("INPUT(2,8,8) => [CONV(4,3,p=1) => POOL(2)?]*5 => FC(3)", optional: .fit)
        let pools = spec.layers.filter { if case .maxPool = $0 { return true } else { return false } }.count
        XCTAssertEqual(pools, 3, "8 -> 4 -> 2 -> 1, then a 2x2 window no longer fits")
        XCTAssertNotNil(notationError { try self.resolve("INPUT(2,8,8) => [CONV(4,3,p=1) => POOL(2)?]*5 => FC(3)", optional: .include) })
    }

    func testTheBareLiteraturePatternParsesAndAsksForTheMissingArguments() throws {
        let model = try ArrowModel.parse("INPUT => [[CONV => RELU]*N => POOL?]*M => [FC => RELU]*K => FC")
        XCTAssertNil(model.input)
        XCTAssertEqual(model.items.count, 3)
        guard case .repeated(.group(let stage, _), count: .word("M"), _) = model.items[0] else {
            return XCTFail("the first item is [...]*M, found \(model.items[0])")
        }
        guard case .optional(.layer(let pool), _) = stage[1] else { return XCTFail("POOL? is optional") }
        XCTAssertEqual(pool.name, "POOL")
        let error = try XCTUnwrap(notationError {
            try model.resolve(input: FeatureShape(channels: 1, height: 28, width: 28), variables: ["N": 1, "M": 1, "K": 1])
        })
        XCTAssertEqual(error.column, 12)
        XCTAssertTrue(error.message.contains("CONV needs its filters, e.g. CONV(32,3)"), error.message)
        let count = try XCTUnwrap(notationError { try model.resolve(input: FeatureShape(channels: 1, height: 28, width: 28)) })
        XCTAssertEqual(count.column, 37, "the '*' before M")
        XCTAssertTrue(count.message.contains("the repetition count 'M' is not defined"), count.message)
    }

    func testSyntaxErrorsPointAtTheColumn() throws {
        let missingArrow = try XCTUnwrap(notationError { try ArrowModel.parse("INPUT(1,28,28) => CONV(8,3) RELU => FC(10)") })
        XCTAssertEqual(missingArrow.column, 29)
        XCTAssertTrue(missingArrow.message.contains("expected '=>' between layers, found 'RELU'"), missingArrow.message)
        XCTAssertTrue(missingArrow.description.hasPrefix("column 29: "), missingArrow.description)
        XCTAssertTrue(missingArrow.description.hasSuffix("\n    " + String(repeating: " ", count: 28) + "^"), missingArrow.description)

        let unclosed = try XCTUnwrap(notationError { try ArrowModel.parse("INPUT(1,28,28) => [CONV(8,3) => RELU * 2 => FC(10)") })
        XCTAssertEqual(unclosed.column, 19)
        XCTAssertTrue(unclosed.message.contains("'[' is never closed"), unclosed.message)

        let character = try XCTUnwrap(notationError { try ArrowModel.parse("INPUT(1,28,28) => CONV(8;3)") })
        XCTAssertEqual(character.column, 25)
        XCTAssertTrue(character.message.contains("unexpected character ';'"), character.message)

        let count = try XCTUnwrap(notationError { try ArrowModel.parse("INPUT(1,28,28) => [RELU] * => FC(10)") })
        XCTAssertEqual(count.column, 28)
        XCTAssertTrue(count.message.contains("expected a count after '*'"), count.message)

        let start = try XCTUnwrap(notationError { try ArrowModel.parse("CONV(8,3) => RELU") })
        XCTAssertEqual(start.column, 1)
        XCTAssertTrue(start.message.contains("must start with INPUT"), start.message)

        let dangling = try XCTUnwrap(notationError { try ArrowModel.parse("INPUT(1,28,28) => RELU =>") })
        XCTAssertEqual(dangling.column, 26)
        XCTAssertTrue(dangling.message.contains("the notation ends here"), dangling.message)
    }

    func testArgumentsAreCheckedByNameAndPosition() throws {
        let label = try XCTUnwrap(notationError { try self.resolve("INPUT(1,8,8) => CONV(8,3,pad=1)") })
        XCTAssertEqual(label.column, 26)
        XCTAssertTrue(label.message.contains("CONV has no argument 'pad'"), label.message)
        let many = try XCTUnwrap(notationError { try self.resolve("INPUT(1,8,8) => FC(10, true, 3)") })
        XCTAssertTrue(many.message.contains("FC takes at most 2"), many.message)
        let range = try XCTUnwrap(notationError { try self.resolve("INPUT(1,8,8) => FC(10) => DO(1.5)") })
        XCTAssertEqual(range.column, 30)
        XCTAssertTrue(range.message.contains("DO's p must be at least 0 and below 1, found 1.5"), range.message)
        let unknown = try XCTUnwrap(notationError { try self.resolve("INPUT(1,8,8) => CONVV(8,3)") })
        XCTAssertTrue(unknown.message.contains("unknown layer 'CONVV' (did you mean 'CONV'?)"), unknown.message)
        let variable = try XCTUnwrap(notationError { try self.resolve("INPUT(1,8,8) => CONV(F,3)") })
        XCTAssertTrue(variable.message.contains("CONV's filters is 'F', which is not defined"), variable.message)
        let softmax = try resolve("INPUT(1,8,8) => FC(10) => SOFTMAX")
        XCTAssertEqual(softmax.layers, [.flatten, .dense(units: 10, bias: true)], "the loss applies softmax")
        XCTAssertNotNil(notationError { try self.resolve("INPUT(1,8,8) => SOFTMAX => FC(10)") })
    }

    func testAnImpossibleShapeCitesTheLayerColumnAndFormula() throws {
        let error = try XCTUnwrap(notationError { try self.resolve("INPUT(3,224,224) => CONV(96,11,s=4) => RELU => FC(10)") })
        XCTAssertEqual(error.column, 21)
        XCTAssertTrue(error.message.contains("model.layers[0]"), error.message)
        XCTAssertTrue(error.message.contains("(224 - 11 + 2*0) / 4 + 1 = 54.25"), error.message)
        XCTAssertTrue(error.message.contains("227"), error.message)
    }

    func testBlocksResidualsAndBranches() throws {
        let spec = try resolve("""
            INPUT(3,32,32) => CONV(16,3,p=1,bias=false) => BN => RELU => BASIC(16) => BASIC(32,2)
              => RES(relu=true)[CONV(32,3,p=same) => BN => RELU => CONV(32,3,p=1) => BN]
              => CONCAT[CONV(8,1) | CONV(8,3,p=1) => RELU | POOL(3,1,p=1)] => GAP => FC(10)
            """)
        XCTAssertEqual(spec.layers[3], .basicBlock(filters: 16, stride: 1, projection: .auto))
        XCTAssertEqual(spec.layers[4], .basicBlock(filters: 32, stride: 2, projection: .auto))
        guard case .residual(let residual) = spec.layers[5], case .concat(let branches) = spec.layers[6] else {
            return XCTFail("expected a residual block and a concatenation, found \(spec.layers)")
        }
        XCTAssertTrue(residual.reluAfterSum)
        XCTAssertEqual(residual.layers.count, 5)
        XCTAssertEqual(branches.count, 3)
        XCTAssertEqual(branches[1], [conv(8, 3, padding: 1), .relu])
        let network = try Network(spec)
        XCTAssertEqual(network.layers[6].outputShape, FeatureShape(channels: 8 + 8 + 32, height: 16, width: 16))
        XCTAssertEqual(spec.layers.suffix(3), [.globalAveragePool, .flatten, .dense(units: 10, bias: true)])
    }

    func testInputMustBeGivenOnceAndAgree() throws {
        XCTAssertNotNil(notationError { try self.resolve("INPUT => FC(10)") })
        let disagree = try XCTUnwrap(notationError {
            try self.resolve("INPUT(1,28,28) => FC(10)", input: FeatureShape(channels: 1, height: 32, width: 32))
        })
        XCTAssertTrue(disagree.message.contains("disagrees with model.input"), disagree.message)
        XCTAssertEqual(try resolve("INPUT => FC(10)", input: FeatureShape(channels: 1, height: 4, width: 4)).layers.count, 2)
    }

    func testArrowModelsInConfigsAndTheirErrorsWithLineAndColumn() throws {
        let scalar = try TrainingConfig.parse(
            yaml: "model: INPUT(1,28,28) => [CONV(8,3,p=1) => RELU => POOL(2)] * 2 => FC(10)\n", source: "arrow.yaml")
        XCTAssertEqual(scalar.model.layers.count, 8)
        let mapping = try TrainingConfig.parse(yaml: """
            model:
              arrow: "INPUT => [[CONV(F,3,p=1) => RELU]*N => POOL?]*M => FC(10)"
              input: [1, 28, 28]
              vars: {N: 2, M: 2, F: 4}
              optional: false
            """, source: "arrow.yaml")
        XCTAssertEqual(mapping.model.layers.count, 2 * 2 * 2 + 2)
        // The resolved config is a plain layer list, which workers read back to the same model.
        XCTAssertEqual(try TrainingConfig.parse(yaml: mapping.yaml, source: "rendered").model, mapping.model)

        do {
            _ = try TrainingConfig.parse(yaml: "train: {epochs: 1}\nmodel: \"INPUT(1,28,28) => CONV(8,3) => => FC(10)\"\n", source: "arrow.yaml")
            XCTFail("expected a syntax error")
        } catch let error as ConfigError {
            XCTAssertEqual(error.line, 2)
            XCTAssertTrue(error.description.hasPrefix("arrow.yaml:2: model (arrow notation), column 32: expected a layer"), error.description)
        }
        do {
            _ = try TrainingConfig.parse(yaml: "model:\n  arrow: INPUT(1,8,8) => FC(10)\n  vars: {N: two}\n", source: "arrow.yaml")
            XCTFail("expected a type error")
        } catch let error as ConfigError {
            XCTAssertEqual(error.line, 3)
            XCTAssertTrue(error.description.contains("model.vars.N must be a number"), error.description)
        }
    }
}
