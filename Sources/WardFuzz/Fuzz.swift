// Fuzz targets for what ward reads from outside: the JSON reader and canonical form, the
// JSON-RPC line framing and request decoder (every agent byte), every method's handling of
// what an agent sends (against a real ledger and real sandboxed tools), and the policy loader
// with the compilation of every tool it loads (every policy file). Each states a property
// that must hold for any input, not only "no crash".
//
// Built two ways (Scripts/fuzz):
// - `swift build --sanitize=fuzzer --sanitize=address -Xswiftc -DWARD_FUZZ`: libFuzzer's main
//   drives LLVMFuzzerTestOneInput for the target named by WARD_FUZZ_TARGET;
// - a plain build: `ward-fuzz TARGET FILE...` replays kept inputs, with no libFuzzer.
import Foundation
import WardCore
import WardLedger
import WardPolicy
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

enum Target: String, CaseIterable {
    case json, rpc, request, policy

    func check(_ bytes: [UInt8]) {
        switch self {
        case .json: checkJSON(bytes)
        case .rpc: checkRPC(bytes)
        case .request: checkRequests(bytes)
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
    case .failure(let refusal) where refusal.silent:
        return  // a notification with bad params: no answer
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

/// The kernel's Landlock ABI, probed once.
let landlockABI = KernelFeatures.probe().landlockABI

/// A policy file loads or is refused with diagnostics that point into the file; every tool
/// it compiles to a seccomp program and a Landlock ruleset or is refused with an error,
/// never a trap.
func checkPolicy(_ bytes: [UInt8]) {
    guard let text = String(validating: bytes, as: UTF8.self) else { return }
    let sources = [(file: "syscall-sets.toml", text: syscallSets), (file: "fuzz.toml", text: text)]
    do {
        let set = try PolicyLoader.load(sources: sources, directory: "policies")
        for (name, tool) in set.tools {
            require(!name.isEmpty && !tool.command.isEmpty, "tool \(name) loaded without a command")
            do {
                let program = try Sandbox.compileConfinement(for: tool, workspace: "/tmp/ward-fuzz-workspace", landlockABI: landlockABI)
                require(!program.bytes.isEmpty, "tool \(name) compiled to an empty seccomp program")
            } catch {
                require(!error.message.isEmpty, "tool \(name) refused without a message")
            }
        }
    } catch {
        require(error.code == .invalidPolicy && !error.diagnostics.isEmpty, "refused without a diagnostic: \(error)")
        for d in error.diagnostics {
            // Lines end at LF bytes (a String's "\r\n" is one Character, so count bytes).
            let lines = (sources.first { $0.file == d.file }?.text.utf8.filter { $0 == 0x0A }.count).map { $0 + 1 } ?? 0
            require(d.line >= 1 && d.line <= max(lines, 1) && d.column >= 1, "diagnostic outside its file: \(d)")
        }
    }
}

// MARK: - The request path

/// A real supervisor for the `request` target: a ledger in a temporary directory, and two
/// tools that run for real in their sandbox (a read-only echo and a non-idempotent one).
let requestWorld: (ledger: Ledger, sandbox: Sandbox, directory: String) = {
    var template = Array("/tmp/ward-fuzz-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed") }
    let directory = String(cString: made)
    let policy = """
        [defaults]
        syscalls = ["@system-service"]

        [tools.echo]
        command = ["/bin/echo", "{text}"]
        arguments = ["text"]
        effect = "read-only"
        read = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache"]
        timeout = "5s"

        [tools.note]
        command = ["/bin/echo", "noted"]
        effect = "non-idempotent"
        read = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache"]
        timeout = "5s"
        """
    do {
        let policies = try PolicyLoader.load(sources: [(file: "syscall-sets.toml", text: syscallSets), (file: "fuzz.toml", text: policy)],
                                             directory: directory)
        // NORMAL durability: the properties are about what is recorded, not about power loss,
        // and an fsync per request would spend the fuzzer's time in the disk.
        let ledger = try Ledger(path: directory + "/ledger.sqlite", durability: .normal)
        let sandbox = try Sandbox(policies: policies, workspace: directory + "/workspace")
        requestDirectory = directory
        atexit { if let directory = requestDirectory { _ = try? FileManager.default.removeItem(atPath: directory) } }
        return (ledger, sandbox, directory)
    } catch {
        fatalError("cannot set up the request target: \(error)")
    }
}()

nonisolated(unsafe) var requestRuns = 0
/// Removed at exit. The fuzzer runs one input at a time on one thread.
nonisolated(unsafe) var requestDirectory: String?

/// Values that have broken parsers and converters before: out-of-range and fractional
/// numbers where integers are meant, wrong types, empty, huge and control-character strings.
let hostileValues: [JSONValue] = [
    .number(1e300), .number(-1e300), .number(9_223_372_036_854_775_808), .number(18_446_744_073_709_551_616), .number(-1), .number(0),
    .number(1.5), .number(1e-300), .number(-0.0), .number(9_007_199_254_740_992), .bool(true), .null, .string(""),
    .string(String(repeating: "a", count: 5000)), .string("x\u{0}a"), .string("\u{1b}]0;owned\u{7}"), .string("\u{9b}31m"),
    .string("e\u{301}"), .string("\u{e9}"), .string("\u{212A}"), .string("\u{202e}txt"), .array([.number(1)]), .object(["a": .null]),
    .array([]), .object([:]),
]

/// Reads the fuzzer's bytes as choices.
struct Choices {
    var bytes: ArraySlice<UInt8>
    mutating func next() -> UInt8? { bytes.popFirst() }
    mutating func pick<T>(_ options: [T]) -> T? { next().map { options[Int($0) % options.count] } }
    /// A string from the next length-prefixed run of bytes (invalid UTF-8 repaired).
    mutating func text() -> String {
        let n = Int(next() ?? 0) % 32
        let run = bytes.prefix(n)
        bytes = bytes.dropFirst(n)
        return String(decoding: run, as: UTF8.self)
    }
}

/// Each input is a sequence of requests, made from valid envelopes whose params are mutated
/// member by member with hostile values, fuzzed text or raw JSON. Every request with an id
/// gets exactly one well-formed answer with that id (and a known error kind), a
/// notification gets none, nothing traps, every call that succeeded replays unchanged, and
/// the run's hash chain verifies afterwards.
func checkRequests(_ bytes: [UInt8]) {
    let world = requestWorld
    requestRuns += 1
    let run = "fuzz-\(requestRuns)"
    let supervisor = Supervisor(ledger: world.ledger, sandbox: world.sandbox, runID: run, attempt: 1)
    var choices = Choices(bytes: bytes[...])
    var finished: [(line: [UInt8], result: JSONValue)] = []
    let methods = Supervisor.methods + ["tool.cal", ""]
    for _ in 0..<8 {
        guard let method = choices.pick(methods), let idKind = choices.next(), let mutation = choices.next() else { break }
        var params: JSONValue = switch method {
        case "tool.call": .object(["callId": .string("c\(choices.next().map { $0 % 4 } ?? 0)"), "tool": .string(choices.pick(["echo", "note", "nope"]) ?? "echo"),
                                   "arguments": .object(["text": .string(choices.text())])])
        case "checkpoint.save": .object(["state": .object(["step": .number(Double(choices.next() ?? 0))]), "label": .string("l")])
        case "checkpoint.load": .object(["seq": .number(Double(choices.next() ?? 1))])
        case "journal.record": .object(["key": .string("k\(choices.next().map { $0 % 4 } ?? 0)"), "value": .string(choices.text())])
        default: .object([:])
        }
        let members = ["callId", "tool", "arguments", "checkpoint", "state", "label", "seq", "key", "value", "extra"]
        switch mutation % 6 {
        case 0: break
        case 1, 2:
            if var o = params.objectValue, let member = choices.pick(members), let value = choices.pick(hostileValues) { o[member] = value; params = .object(o) }
        case 3:
            if var o = params.objectValue, let member = choices.pick(members) { o[member] = .string(choices.text()); params = .object(o) }
        case 4:
            if let value = choices.pick(hostileValues) { params = value }
        default:
            if var o = params.objectValue, let member = choices.pick(members) {
                o[member] = (try? JSONValue.parse(Array(choices.text().utf8))) ?? .null
                params = .object(o)
            }
        }
        let id: JSONValue? = switch idKind % 6 {
        case 0: nil
        case 1: .number(Double(idKind))
        case 2: .string("id-\(idKind)")
        case 3: .null
        case 4: .number(1e300)
        default: .number(0.5)
        }
        var envelope: [String: JSONValue] = ["jsonrpc": .string("2.0"), "method": .string(method), "params": params]
        if let id { envelope["id"] = id }
        let line = JSONValue.object(envelope).canonicalBytes
        let response = supervisor.handle(line: line)
        guard let id else {
            require(response == nil, "a notification was answered: \(String(decoding: response ?? [], as: UTF8.self))")
            continue
        }
        guard let response, let answer = (try? JSONValue.parse(response))?.objectValue else { fatalError("no JSON answer to \(method)") }
        // An id that cannot be echoed exactly (not an integer, or past 2^53) is refused with id null.
        let echoed: JSONValue = if case .number(let d) = id, Int(exactly: d).map({ abs($0) <= Params.maximumInteger }) != true { .null } else { id }
        require(answer["jsonrpc"] == .string("2.0") && answer["id"] == echoed, "answer lost its id or version")
        require((answer["result"] == nil) != (answer["error"] == nil), "an answer needs exactly one of result and error")
        if let error = answer["error"]?.objectValue {
            let kind = error["data"]?.objectValue?["kind"]?.stringValue ?? ""
            require(RPCError.Kind(rawValue: kind) != nil, "unknown error kind \(kind)")
            require(kind != "internal" && kind != "storage", "\(method) failed inside ward: \(error["message"]?.stringValue ?? "")")
        } else if method == "tool.call", let result = answer["result"], result.objectValue?["status"] == .string("succeeded") {
            finished.append((line, result))
        }
    }
    // Recorded results are never lost or changed: asking again replays them byte for byte.
    for (line, result) in finished {
        guard let again = supervisor.handle(line: line).flatMap({ try? JSONValue.parse($0) })?.objectValue?["result"]?.objectValue else {
            fatalError("a finished call was not replayed")
        }
        var expected = result.objectValue ?? [:]
        expected["replayed"] = .bool(true)
        var got = again
        got["durationMs"] = expected["durationMs"]
        require(got == expected, "a replay differs from the recorded result: \(JSONValue.object(got).canonical) vs \(JSONValue.object(expected).canonical)")
    }
    do {
        let report = try world.ledger.verify(run: run)
        require(report.ok, "ledger verify failed: \(report.runs.compactMap(\.problem))")
    } catch where error.code == .notFound {
        // Nothing was recorded for this run.
    } catch {
        fatalError("ledger verify threw: \(error)")
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
