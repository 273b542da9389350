/// The meta fields of the sharded reduction's messages (types 10-23), in the conventions of
/// `WireCodec` (optional ids are a presence byte then a UInt32):
/// ```
/// listening       endpoint, publicKey
/// plan            version UInt64, [workerID UInt32, endpoint, publicKey],
///                 [owner UInt32, replica?, source?, ownerNeedsState Bool, replicaNeedsState Bool], [newMember UInt32]
/// computed        epoch UInt32, results, [node], timings, nonFinite, streamedSeconds Float64
/// slice-partials  slice UInt32, [node], encoding          (one tensor per node, in that `TensorEncoding`)
/// reduce          version UInt32, totalMicroBatches UInt32, learningRate Float32, isFinal Bool, [node, worker UInt32]
/// block-sums      slice UInt32, [sum Double]
/// norm            value Double
/// weight-slice    slice UInt32                            (one tensor)
/// slice-state     slice UInt32, hasWeights Bool, [name]   (the weights if present, then one tensor per name)
/// step-done       planVersion UInt64
/// gather          planVersion UInt64
/// plan-adopted    planVersion UInt64
/// plan-in-force   planVersion UInt64
/// slice-gradient  slice UInt32, learningRate Float32      (one tensor)
/// ```
/// where node = level UInt8, index UInt32. Everything is checked as it is read: ids of a plan
/// belong to its members, covers cover every micro-batch exactly once, sums and norms are finite.
extension WireCodec {
    /// Most slices a plan may name: the layout makes at most 64 and one state slice.
    public static let maximumSlices = 4096
    /// Most members a plan may name.
    public static let maximumMembers = 65536
    /// A CURVE public key in Z85.
    static let publicKeyLength = 40
    /// Longest endpoint a worker may announce.
    static let maximumEndpointBytes = 1024

    static func writeShardFields(of message: Message, into meta: inout ByteWriter) {
        switch message {
        case .listening(let listening):
            meta.string(listening.endpoint)
            meta.string(listening.publicKey)
            meta.string(listening.localEndpoint)
            meta.string(listening.host)
        case .plan(let plan):
            meta.u64(plan.version)
            meta.count(plan.members.count)
            for member in plan.members {
                meta.u32(member.workerID)
                meta.string(member.endpoint)
                meta.string(member.publicKey)
                meta.string(member.localEndpoint)
                meta.string(member.host)
            }
            meta.count(plan.slices.count)
            for slice in plan.slices {
                meta.u32(slice.owner)
                meta.optionalID(slice.replica)
                meta.optionalID(slice.source)
                meta.u8(slice.ownerNeedsState ? 1 : 0)
                meta.u8(slice.replicaNeedsState ? 1 : 0)
            }
            meta.count(plan.newMembers.count)
            for id in plan.newMembers { meta.u32(id) }
        case .computed(let computed):
            meta.u32(computed.epoch)
            meta.results(computed.results)
            meta.nodes(computed.nodes, "computed.nodes")
            meta.timings(computed.timings)
            meta.string(computed.nonFinite)
            meta.u64(computed.streamedSeconds.bitPattern)
        case .slicePartials(let partials):
            meta.u32(partials.slice)
            meta.nodes(partials.nodes, "slicePartials.nodes")
            meta.encoding(partials.encoding)
        case .reduce(let cover):
            meta.u32(cover.version)
            meta.u32(cover.totalMicroBatches)
            meta.u32(cover.learningRate.bitPattern)
            meta.u8(cover.isFinal ? 1 : 0)
            meta.count(cover.nodes.count)
            for entry in cover.nodes {
                meta.node(entry.node, "reduce.nodes")
                meta.u32(entry.worker)
            }
        case .blockSums(let sums):
            meta.u32(sums.slice)
            meta.count(sums.sums.count)
            for sum in sums.sums { meta.u64(sum.bitPattern) }
        case .norm(let norm):
            meta.u64(norm.value.bitPattern)
        case .weightSlice(let slice):
            meta.u32(slice.slice)
        case .sliceState(let state):
            meta.u32(state.slice)
            meta.u8(state.weights == nil ? 0 : 1)
            meta.count(state.names.count)
            for name in state.names { meta.string(name) }
        case .stepDone(let done):
            meta.u64(done.planVersion)
        case .gather(let gather):
            meta.u64(gather.planVersion)
        case .planAdopted(let adopted):
            meta.u64(adopted.planVersion)
        case .planInForce(let inForce):
            meta.u64(inForce.planVersion)
        case .sliceGradient(let gradient):
            meta.u32(gradient.slice)
            meta.u32(gradient.learningRate.bitPattern)
        default:
            preconditionFailure("\(message.typeName) is not a message of the sharded reduction")
        }
    }

    static func readShardFields(_ type: MessageType, from reader: inout ByteReader, limits: DecodeLimits) throws(DecodeError) -> Body {
        switch type {
        case .listening:
            let endpoint = try reader.string("listening.endpoint", limit: maximumEndpointBytes)
            let key = try readPublicKey("listening.publicKey", from: &reader)
            let (local, host) = try readLocalListener("listening", from: &reader)
            return .complete(.listening(Listening(endpoint: endpoint, publicKey: key, localEndpoint: local, host: host)))

        case .plan:
            return .complete(.plan(try readPlan(from: &reader)))

        case .computed:
            let epoch = try reader.u32("computed.epoch")
            let results = try readResults("computed", from: &reader, limits: limits)
            let nodes = try readNodes("computed.nodes", from: &reader, limit: limits.maxMicroBatches)
            let timings = try readTimings("computed", from: &reader)
            let finding = try reader.string("computed.nonFinite", limit: limits.maxStringBytes)
            let streamed = try readSeconds("computed.streamedSeconds", from: &reader)
            guard streamed <= timings.totalSeconds + WireCodec.timingTolerance else {
                throw .invalidValue(field: "computed.streamedSeconds", value: String(streamed),
                                    requirement: "no more than the total from assignment to results (\(timings.totalSeconds) s)")
            }
            return .complete(.computed(Computed(epoch: epoch, results: results, nodes: nodes, timings: timings, nonFinite: finding,
                                                streamedSeconds: streamed)))

        case .slicePartials:
            let slice = try readSlice("slicePartials.slice", from: &reader)
            let nodes = try readNodes("slicePartials.nodes", from: &reader, limit: limits.maxTensorFrames)
            guard !nodes.isEmpty else {
                throw .invalidValue(field: "slicePartials.nodes", value: "0 nodes", requirement: "at least one tree node")
            }
            let encoding = try reader.encoding("slicePartials.encoding")
            return .withTensors(count: nodes.count, rule: "a slice-partials message (one tensor per tree node)", encoding: encoding) {
                .slicePartials(SlicePartials(slice: slice, nodes: nodes, tensors: $0, encoding: encoding))
            }

        case .reduce:
            let version = try reader.u32("reduce.version")
            let total = try reader.u32("reduce.totalMicroBatches")
            let learningRate = Float(bitPattern: try reader.u32("reduce.learningRate"))
            guard learningRate.isFinite else {
                throw .invalidValue(field: "reduce.learningRate", value: String(learningRate), requirement: "a finite learning rate")
            }
            let isFinal = try reader.bool("reduce.isFinal")
            let count = try reader.count("reduce.nodes", elementBytes: 9, limit: limits.maxMicroBatches)
            var entries: [CoverNode] = []
            entries.reserveCapacity(count)
            var covered: UInt64 = 0
            for position in 0..<count {
                let field = "reduce.nodes[\(position)]"
                let node = try readNode(field, from: &reader)
                guard node.microBatches.lowerBound < Int(total) else {
                    throw .invalidValue(field: field, value: node.description, requirement: "must start below the step's \(total) micro-batches")
                }
                covered += UInt64(min(node.microBatches.upperBound, Int(total)) - node.microBatches.lowerBound)
                entries.append(CoverNode(node: node, worker: try reader.u32("\(field).worker")))
            }
            try checkDisjoint(entries.map(\.node), field: "reduce.nodes")
            // Disjoint nodes inside the step that add up to every micro-batch cover each once.
            guard covered == UInt64(total), total > 0 else {
                throw .invalidValue(field: "reduce.nodes", value: "\(covered) of \(total) micro-batches",
                                    requirement: "the nodes must cover every micro-batch of the step exactly once")
            }
            return .complete(.reduce(ReduceCover(version: version, totalMicroBatches: total, learningRate: learningRate, nodes: entries, isFinal: isFinal)))

        case .blockSums:
            let slice = try readSlice("blockSums.slice", from: &reader)
            let count = try reader.count("blockSums.sums", elementBytes: 8, limit: limits.maxTensorValues)
            var sums: [Double] = []
            sums.reserveCapacity(count)
            for position in 0..<count {
                sums.append(try readMagnitude("blockSums.sums[\(position)]", from: &reader))
            }
            return .complete(.blockSums(BlockSums(slice: slice, sums: sums)))

        case .norm:
            return .complete(.norm(GlobalNorm(value: try readMagnitude("norm.value", from: &reader))))

        case .weightSlice:
            let slice = try readSlice("weightSlice.slice", from: &reader)
            return .withTensors(count: 1, rule: "a weight-slice message (one tensor)") { .weightSlice(WeightSlice(slice: slice, values: $0[0])) }

        case .sliceState:
            let slice = try readSlice("sliceState.slice", from: &reader)
            let hasWeights = try reader.bool("sliceState.hasWeights")
            let count = try reader.count("sliceState.names", elementBytes: 4, limit: 64)
            var names: [String] = []
            for position in 0..<count {
                let name = try reader.string("sliceState.names[\(position)]", limit: 256)
                guard !names.contains(name) else {
                    throw .invalidValue(field: "sliceState.names[\(position)]", value: name, requirement: "names must be distinct")
                }
                names.append(name)
            }
            return .withTensors(count: count + (hasWeights ? 1 : 0), rule: "a slice-state message (the weights if flagged, then one tensor per name)") {
                .sliceState(SliceState(slice: slice, names: names, weights: hasWeights ? $0[0] : nil, tensors: Array($0.dropFirst(hasWeights ? 1 : 0))))
            }

        case .stepDone:
            return .complete(.stepDone(StepDone(planVersion: try reader.u64("stepDone.planVersion"))))

        case .gather:
            return .complete(.gather(Gather(planVersion: try reader.u64("gather.planVersion"))))

        case .planAdopted:
            return .complete(.planAdopted(PlanAdopted(planVersion: try reader.u64("planAdopted.planVersion"))))

        case .planInForce:
            return .complete(.planInForce(PlanInForce(planVersion: try reader.u64("planInForce.planVersion"))))

        case .sliceGradient:
            let slice = try readSlice("sliceGradient.slice", from: &reader)
            let learningRate = Float(bitPattern: try reader.u32("sliceGradient.learningRate"))
            guard learningRate.isFinite else {
                throw .invalidValue(field: "sliceGradient.learningRate", value: String(learningRate), requirement: "a finite learning rate")
            }
            return .withTensors(count: 1, rule: "a slice-gradient message (one tensor)") {
                .sliceGradient(SliceGradient(slice: slice, learningRate: learningRate, values: $0[0]))
            }

        default:
            preconditionFailure("\(type.name) is not a message of the sharded reduction")
        }
    }

    private static func readPlan(from reader: inout ByteReader) throws(DecodeError) -> ShardPlan {
        let version = try reader.u64("plan.version")
        let memberCount = try reader.count("plan.members", elementBytes: 20, limit: maximumMembers)
        guard memberCount > 0 else { throw .invalidValue(field: "plan.members", value: "0", requirement: "a plan needs at least one member") }
        var members: [ShardMember] = []
        var ids = Set<UInt32>()
        for position in 0..<memberCount {
            let field = "plan.members[\(position)]"
            let id = try reader.u32("\(field).workerID")
            guard ids.insert(id).inserted else { throw .invalidValue(field: "\(field).workerID", value: String(id), requirement: "member ids must be distinct") }
            let endpoint = try reader.string("\(field).endpoint", limit: maximumEndpointBytes)
            let key = try readPublicKey("\(field).publicKey", from: &reader)
            let (local, host) = try readLocalListener(field, from: &reader)
            members.append(ShardMember(workerID: id, endpoint: endpoint, publicKey: key, localEndpoint: local, host: host))
        }
        func member(_ id: UInt32, _ field: String) throws(DecodeError) -> UInt32 {
            guard ids.contains(id) else { throw .invalidValue(field: field, value: String(id), requirement: "must be a member of the plan") }
            return id
        }
        let sliceCount = try reader.count("plan.slices", elementBytes: 8, limit: maximumSlices)
        guard sliceCount > 0 else { throw .invalidValue(field: "plan.slices", value: "0", requirement: "a plan needs at least one slice") }
        var slices: [SliceAssignment] = []
        for position in 0..<sliceCount {
            let field = "plan.slices[\(position)]"
            let owner = try member(try reader.u32("\(field).owner"), "\(field).owner")
            var replica: UInt32?
            if let id = try reader.optionalID("\(field).replica") {
                guard id != owner else { throw .invalidValue(field: "\(field).replica", value: String(id), requirement: "a slice's replica cannot be its owner") }
                replica = try member(id, "\(field).replica")
            }
            var source: UInt32?
            if let id = try reader.optionalID("\(field).source") { source = try member(id, "\(field).source") }
            let ownerNeeds = try reader.bool("\(field).ownerNeedsState")
            let replicaNeeds = try reader.bool("\(field).replicaNeedsState")
            guard source != nil || (!ownerNeeds && !replicaNeeds) else {
                throw .invalidValue(field: "\(field).source", value: "none", requirement: "a slice whose state moves needs a source")
            }
            guard replica != nil || !replicaNeeds else {
                throw .invalidValue(field: "\(field).replicaNeedsState", value: "true", requirement: "a slice without a replica cannot send it state")
            }
            slices.append(SliceAssignment(owner: owner, replica: replica, source: source, ownerNeedsState: ownerNeeds, replicaNeedsState: replicaNeeds))
        }
        let newCount = try reader.count("plan.newMembers", elementBytes: 4, limit: memberCount)
        var newMembers: [UInt32] = []
        for position in 0..<newCount {
            let id = try member(try reader.u32("plan.newMembers[\(position)]"), "plan.newMembers[\(position)]")
            guard !newMembers.contains(id) else {
                throw .invalidValue(field: "plan.newMembers[\(position)]", value: String(id), requirement: "new members must be distinct")
            }
            newMembers.append(id)
        }
        return ShardPlan(version: version, members: members, slices: slices, newMembers: newMembers)
    }

    private static func readSlice(_ field: String, from reader: inout ByteReader) throws(DecodeError) -> UInt32 {
        let slice = try reader.u32(field)
        guard slice < UInt32(maximumSlices) else {
            throw .invalidValue(field: field, value: String(slice), requirement: "a model has fewer than \(maximumSlices) slices")
        }
        return slice
    }

    /// A worker's local listener and host: both empty, or an abstract socket (`ipc://@NAME`) and
    /// the host it exists on. Anything else would have peers connect to what the worker never
    /// bound.
    private static func readLocalListener(_ field: String, from reader: inout ByteReader) throws(DecodeError) -> (String, String) {
        let endpoint = try reader.string("\(field).localEndpoint", limit: maximumEndpointBytes)
        let host = try reader.string("\(field).host", limit: HostIdentity.maximumBytes)
        let prefix = PeerMesh.localEndpointPrefix
        guard endpoint.isEmpty || (endpoint.hasPrefix(prefix) && endpoint.utf8.count > prefix.utf8.count) else {
            throw .invalidValue(field: "\(field).localEndpoint", value: endpoint, requirement: "an abstract socket \(prefix)NAME, or empty")
        }
        guard endpoint.isEmpty == host.isEmpty else {
            throw .invalidValue(field: "\(field).host", value: host.isEmpty ? "empty" : host,
                                requirement: "given exactly when a local endpoint is")
        }
        return (endpoint, host)
    }

    private static func readPublicKey(_ field: String, from reader: inout ByteReader) throws(DecodeError) -> String {
        let key = try reader.string(field, limit: publicKeyLength)
        guard key.isEmpty || key.utf8.count == publicKeyLength else {
            throw .invalidValue(field: field, value: "\(key.utf8.count) bytes", requirement: "a CURVE public key is \(publicKeyLength) characters of Z85, or empty")
        }
        return key
    }

    /// A finite number, 0 or more (a sum of squares or a norm).
    private static func readMagnitude(_ field: String, from reader: inout ByteReader) throws(DecodeError) -> Double {
        let value = Double(bitPattern: try reader.u64(field))
        guard value.isFinite, value >= 0 else {
            throw .invalidValue(field: field, value: String(value), requirement: "a finite number, 0 or more")
        }
        return value
    }
}

extension ByteWriter {
    mutating func optionalID(_ id: UInt32?) {
        u8(id == nil ? 0 : 1)
        u32(id ?? 0)
    }

    mutating func node(_ node: TreeNode, _ field: @autoclosure () -> String) {
        u8(narrowed(node.level, "\(field()).level"))
        u32(narrowed(node.index, "\(field()).index"))
    }

    mutating func nodes(_ nodes: [TreeNode], _ field: @autoclosure () -> String) {
        count(nodes.count)
        for node in nodes { self.node(node, field()) }
    }
}

extension ByteReader {
    mutating func optionalID(_ field: @autoclosure () -> String) throws(DecodeError) -> UInt32? {
        let present = try bool("\(field()).present")
        let id = try u32(field())
        guard present || id == 0 else {
            throw .invalidValue(field: field(), value: String(id), requirement: "an absent id is written as 0")
        }
        return present ? id : nil
    }
}
