/// Why a safetensors file could not be read or written. Each case names the file (or the tensor,
/// when encoding in memory) and its description says what to do about it.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or read.
    case fileUnreadable(path: String, reason: String)
    /// The file could not be created or written.
    case fileUnwritable(path: String, reason: String)
    /// Fewer than the 8 bytes of the header length.
    case fileTooSmall(path: String, size: Int)
    /// The header length exceeds the format's 100 MB cap.
    case headerTooLarge(path: String, headerLength: UInt64, limit: Int)
    /// The header length runs past the end of the file.
    case headerBeyondFile(path: String, headerLength: UInt64, fileSize: Int)
    /// The header bytes are not UTF-8 text.
    case headerNotUTF8(path: String)
    /// The header is not JSON; `offset` is the byte within the header where parsing stopped.
    case invalidJSON(path: String, offset: Int, detail: String)
    /// The header is JSON but a field does not have the shape the format prescribes.
    case invalidHeader(path: String, field: String, detail: String)
    /// Two tensors share a name.
    case duplicateName(path: String, name: String)
    /// A dtype the safetensors format does not define.
    case unknownDType(path: String, tensor: String, dtype: String)
    /// A dtype the format defines but this reader does not convert.
    case unsupportedDType(path: String, tensor: String, dtype: String)
    /// The shape times the element size differs from the byte range the offsets give.
    case shapeMismatch(path: String, tensor: String, shape: [Int], dtype: String, expectedBytes: Int, actualBytes: Int)
    /// A tensor's byte range is reversed or reaches past the data buffer.
    case offsetsOutOfBounds(path: String, tensor: String, begin: Int, end: Int, bufferSize: Int)
    /// Two tensors' byte ranges overlap.
    case overlappingTensors(path: String, first: String, second: String, begin: Int, end: Int)
    /// Bytes `begin..<end` of the data buffer belong to no tensor; `before` is the tensor that follows
    /// the gap, nil when the gap is at the end of the buffer.
    case gapInBuffer(path: String, begin: Int, end: Int, before: String?)
    /// A `__metadata__` value that is not a string.
    case metadataValueNotString(path: String, key: String)
    /// A tensor handed to the writer cannot be stored as given.
    case invalidTensor(name: String, reason: String)

    /// What went wrong, where, and how to fix it.
    public var description: String {
        let supported = TensorDType.supportedNames
        switch self {
        case .fileUnreadable(let path, let reason):
            return "cannot read safetensors file '\(path)': \(reason); check the path and its permissions"
        case .fileUnwritable(let path, let reason):
            return "cannot write safetensors file '\(path)': \(reason); check that the directory exists, is writable and has free space"
        case .fileTooSmall(let path, let size):
            return "'\(path)' is \(size) bytes long, shorter than the 8-byte header length that starts every safetensors file; it is truncated or not a safetensors file: save or copy it again"
        case .headerTooLarge(let path, let headerLength, let limit):
            return "'\(path)': the header length field says \(headerLength) bytes, above the format's limit of \(limit); the file is corrupt or not a safetensors file: save or copy it again"
        case .headerBeyondFile(let path, let headerLength, let fileSize):
            return "'\(path)': the header length field says \(headerLength) bytes but only \(max(0, fileSize - 8)) follow it (file size \(fileSize)); the file is truncated or not a safetensors file: save or copy it again"
        case .headerNotUTF8(let path):
            return "'\(path)': the header is not UTF-8 text; the file is corrupt or not a safetensors file: save or copy it again"
        case .invalidJSON(let path, let offset, let detail):
            return "'\(path)': the header is not valid JSON at byte \(offset) of the header: \(detail); the file is corrupt or was written by a broken writer: save it again"
        case .invalidHeader(let path, let field, let detail):
            return "'\(path)': header field '\(field)': \(detail); the file does not follow the safetensors format: save it again with a safetensors library"
        case .duplicateName(let path, let name):
            return "'\(path)': tensor name '\(name)' appears more than once in the header; names must be unique: save the file again with distinct names"
        case .unknownDType(let path, let tensor, let dtype):
            return "'\(path)': tensor '\(tensor)' has dtype '\(dtype)', which is not a safetensors dtype (this reader converts \(supported)); the header is corrupt: save the file again"
        case .unsupportedDType(let path, let tensor, let dtype):
            return "'\(path)': tensor '\(tensor)' has dtype '\(dtype)', which this reader does not convert (it converts \(supported)); convert the tensor before saving, for example with `.float()` in PyTorch"
        case .shapeMismatch(let path, let tensor, let shape, let dtype, let expectedBytes, let actualBytes):
            return "'\(path)': tensor '\(tensor)' has shape \(shape) of \(dtype), which is \(expectedBytes) bytes, but its data_offsets span \(actualBytes) bytes; the header is inconsistent: save the file again"
        case .offsetsOutOfBounds(let path, let tensor, let begin, let end, let bufferSize):
            if end < begin {
                return "'\(path)': tensor '\(tensor)' has data_offsets [\(begin), \(end)] whose end comes before its begin; the header is corrupt: save the file again"
            }
            return "'\(path)': tensor '\(tensor)' has data_offsets [\(begin), \(end)] reaching past the \(bufferSize)-byte data buffer; the file is truncated or its header is corrupt: save or copy it again"
        case .overlappingTensors(let path, let first, let second, let begin, let end):
            return "'\(path)': tensors '\(first)' and '\(second)' both claim bytes \(begin)..<\(end) of the data buffer; the header is corrupt: save the file again"
        case .gapInBuffer(let path, let begin, let end, let before):
            let place = before.map { "before tensor '\($0)'" } ?? "at the end of the buffer"
            return "'\(path)': bytes \(begin)..<\(end) of the data buffer (\(place)) belong to no tensor; safetensors requires the tensors to cover the buffer exactly: save the file again"
        case .metadataValueNotString(let path, let key):
            return "'\(path)': __metadata__ value for key '\(key)' is not a string; safetensors metadata maps strings to strings: store the value as a string"
        case .invalidTensor(let name, let reason):
            return "cannot encode tensor '\(name)': \(reason)"
        }
    }
}
