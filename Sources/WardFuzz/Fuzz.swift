// Fuzz targets for what ward reads from outside: the JSON reader and canonical form, the
// JSON-RPC line framing and request decoder (every agent byte), and the policy loader (every
// policy file). Each states a property that must hold for any input, not only "no crash".
//
// Built two ways (Scripts/fuzz):
// - `swift build --sanitize=fuzzer --sanitize=address -Xswiftc -DWARD_FUZZ`: libFuzzer's main
//   drives LLVMFuzzerTestOneInput for the target named by WARD_FUZZ_TARGET;
// - a plain build: `ward-fuzz TARGET FILE...` replays kept inputs, with no libFuzzer.
import WardCore
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

enum Target: String, CaseIterable {
    case json, rpc, policy

    func check(_ bytes: [UInt8]) {
        switch self {
        case .json: checkJSON(bytes)
        case .rpc: checkRPC(bytes)
        case .policy: checkPolicy(bytes)
        }
    }
}

func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}

/// Whatever parses has a canonical form that parses again to the same canonical form.
func checkJSON(_ bytes: [UInt8]) {
    guard let value = try? JSONValue.parse(bytes) else { return }
    let canonical = value.canonical
    guard let again = try? JSONValue.parse(canonical) else { fatalError("canonical form does not parse: \(canonical)") }
    require(again.canonical == canonical, "canonical form is not a fixpoint: \(canonical) vs \(again.canonical)")
}

/// The first two bytes choose how the stream is cut into reads and the line limit; the rest
/// is the stream. The framer must return exactly the lines a plain split gives, in order,
/// until a line longer than the limit, which it must refuse no later than one read after the
/// limit is passed. Every line decodes to a request or a refusal, and either answer is a
/// JSON-RPC response object carrying the request's id.
func checkRPC(_ input: [UInt8]) {
    guard input.count >= 2 else { return }
    let readSize = Int(input[0] % 64) + 1
    let limit = Int(input[1]) * 4
    let stream = Array(input[2...])
    var expected = stream.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
    let trailing = expected.removeLast()  // after the last newline: a line not yet finished
    var framer = LineFramer(maximumLineBytes: limit)
    var offset = 0
    var returned = 0
    reading: while offset < stream.count {
        let end = min(offset + readSize, stream.count)
        stream[offset..<end].withUnsafeBytes { framer.append($0) }
        offset = end
        while true {
            let line: [UInt8]?
            do { line = try framer.next() } catch {
                let over = returned < expected.count ? expected[returned].count : trailing.count
                require(over > limit, "a line of \(over) bytes refused with limit \(limit)")
                return
            }
            guard let line else { break }
            require(returned < expected.count && line == expected[returned], "line \(returned) differs from the split")
            require(line.count <= limit, "a line of \(line.count) bytes passed limit \(limit)")
            returned += 1
            answer(line)
        }
        require(framer.pendingBytes <= limit, "\(framer.pendingBytes) bytes held past limit \(limit)")
    }
    require(returned == expected.count, "\(expected.count - returned) whole lines never returned")
    require(framer.pendingBytes == trailing.count, "pending \(framer.pendingBytes), expected \(trailing.count)")
}

func answer(_ line: [UInt8]) {
    let id: JSONValue
    let response: [UInt8]
    switch RPCRequest.decode(line) {
    case .success(let request):
        id = request.id ?? .null
        response = RPCResponse.line(id: id, result: request.params)
    case .failure(let refusal):
        id = refusal.id
        response = RPCResponse.line(id: id, error: refusal.error)
    }
    require(!response.contains(0x0A), "a response holds a newline")
    guard let object = (try? JSONValue.parse(response))?.objectValue else { fatalError("response is not a JSON object") }
    require(object["jsonrpc"] == .string("2.0") && object["id"] == id, "response lost its id or version")
}

/// The shipped syscall sets, read once, so fuzzed tools can name real sets.
let syscallSets: String = {
    let path = (getenv("WARD_FUZZ_POLICIES").map { String(cString: $0) } ?? "policies") + "/syscall-sets.toml"
    return (try? PolicyLoader.readPolicyFile(path)) ?? ""
}()

/// A policy file loads or is refused with diagnostics that point into the file.
func checkPolicy(_ bytes: [UInt8]) {
    guard let text = String(validating: bytes, as: UTF8.self) else { return }
    let sources = [(file: "syscall-sets.toml", text: syscallSets), (file: "fuzz.toml", text: text)]
    do {
        let set = try PolicyLoader.load(sources: sources, directory: "policies")
        for (name, tool) in set.tools { require(!name.isEmpty && !tool.command.isEmpty, "tool \(name) loaded without a command") }
    } catch {
        require(error.code == .invalidPolicy && !error.diagnostics.isEmpty, "refused without a diagnostic: \(error)")
        for d in error.diagnostics {
            // Lines end at LF bytes (a String's "\r\n" is one Character, so count bytes).
            let lines = (sources.first { $0.file == d.file }?.text.utf8.filter { $0 == 0x0A }.count).map { $0 + 1 } ?? 0
            require(d.line >= 1 && d.line <= max(lines, 1) && d.column >= 1, "diagnostic outside its file: \(d)")
        }
    }
}

#if WARD_FUZZ
nonisolated(unsafe) let selected: Target = {
    guard let name = getenv("WARD_FUZZ_TARGET").map({ String(cString: $0) }), let target = Target(rawValue: name) else {
        fatalError("set WARD_FUZZ_TARGET to one of \(Target.allCases.map(\.rawValue))")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    selected.check(Array(UnsafeRawBufferPointer(start: start, count: count)))
    return 0
}
#else
@main
struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = Target(rawValue: name) else {
            print("usage: ward-fuzz \(Target.allCases.map(\.rawValue).joined(separator: "|")) FILE...")
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let fp = fopen(path, "r") else { print("ward-fuzz: cannot read \(path)"); exit(2) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while case let n = fread(&buffer, 1, buffer.count, fp), n > 0 { bytes += buffer[0..<n] }
            fclose(fp)
            target.check(bytes)
        }
        print("ward-fuzz: \(arguments.count - 1) \(target.rawValue) inputs replayed, every property held")
    }
}
#endif
