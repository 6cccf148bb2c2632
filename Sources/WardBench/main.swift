// ward-bench: the figures of Scripts/bench. Every comparison is a ratio of medians of runs
// measured in one process, in rotating blocks (see `measureInBlocks`), so that drift and
// machine noise hit all alike.
import CWardBench
import WardClient
import WardCore
import WardPolicy
import Foundation
import WardLedger
import WardMCP
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Samples of several operations, `rounds` rounds of `block` back-to-back runs of each, the
/// order of the blocks rotating every round, with a pause after each block. Back to back,
/// each operation is measured in its own steady state, its own aftermath included: bwrap's
/// namespaces are torn down by kernel workers after it exits, for milliseconds, and with
/// one-at-a-time interleaving that work landed on whatever ran next (ward's call followed
/// bwrap two times in three, bwrap never followed itself). The pause lets one block's
/// deferred work end before the next block starts.
func measureInBlocks(rounds: Int, block: Int, _ operations: (Int) -> [(name: String, run: () throws -> Void)]) throws -> [String: [Double]] {
    var samples: [String: [Double]] = [:]
    for round in 0..<rounds {
        let ops = operations(round)
        for k in 0..<ops.count {
            let op = ops[(k + round) % ops.count]
            for _ in 0..<block {
                let t0 = now()
                try op.run()
                samples[op.name, default: []].append(Double(now() - t0) / 1000)
            }
            usleep(50_000)
        }
    }
    return samples
}

/// `ward mcp`'s and its Python peer's start-up times, in µs (`startUp`).
var startTimes: [Double] = []
var peerStartTimes: [Double] = []

/// Runs of each operation per block.
let blockLength = 10

/// posix_spawn + wait, for peers (bwrap, firejail) whose own set-up is what is measured.
func spawnAndWait(_ argv: [String]) -> Int32 {
    var pid: pid_t = 0
    let rc = Sandbox.withCStrings(argv) { cArgv in
        posix_spawn(&pid, argv[0], nil, nil, UnsafeMutablePointer(mutating: cArgv), environ)
    }
    guard rc == 0 else { return -1 }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return status
}

func which(_ name: String) -> String? {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
    return nil
}

/// One figure of the table: ward's value, what it is compared with, and the budget it is held to.
struct Row {
    enum Unit: String { case micros = "µs", bytes, perSecond = "calls/s" }
    enum Budget {
        /// ward ≤ x × the peer.
        case ratio(Double)
        /// ward ≤ x (in the row's unit).
        case atMost(Double)
        /// ward ≥ x (in the row's unit).
        case atLeast(Double)
        /// ward ≤ 1.5 × the peer + 20 µs: does not grow with history.
        case flat
    }

    var name: String
    var ward: Double
    var peer: String
    var peerValue: Double?
    var budget: Budget?
    var unit: Unit = .micros

    var ratio: Double? { peerValue.map { ward / $0 } }
    var met: Bool? {
        switch budget {
        case .ratio(let x)?: ratio.map { $0 <= x }
        case .atMost(let x)?: ward <= x
        case .atLeast(let x)?: ward >= x
        case .flat?: peerValue.map { ward <= 1.5 * $0 + 20 }
        case nil: nil
        }
    }
}

// MARK: - Arguments

var iterations = 300
var jsonPath: String?
var policiesDir = "policies"
var peersPath: String?
var wardWithoutFailPoints: String?
/// A Python with the official MCP SDK, and Scripts/mcp_peer.py: the start-up peer of `ward mcp`.
var mcpPeer: (python: String, script: String)?
/// A PostgreSQL ledger's URL: only the durable steps on it are measured (Scripts/bench_postgres.py).
var postgresLedger: String?
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--iterations": iterations = Int(args.popFirst() ?? "") ?? iterations
    case "--json": jsonPath = args.popFirst()
    case "--policies": policiesDir = args.popFirst() ?? policiesDir
    case "--peers": peersPath = args.popFirst()
    case "--ward-without-failpoints": wardWithoutFailPoints = args.popFirst()
    case "--postgres": postgresLedger = args.popFirst()
    case "--mcp-peer":
        if let python = args.popFirst(), let script = args.popFirst() { mcpPeer = (python, script) }
    default:
        print("usage: ward-bench [--iterations N] [--json FILE] [--policies DIR] [--peers FILE] [--ward-without-failpoints WARD] [--mcp-peer PYTHON SCRIPT] [--postgres URL]")
        exit(2)
    }
}

// MARK: - On PostgreSQL: the durable steps only, as JSON

if let postgresLedger {
    let ledger = try Ledger(path: postgresLedger)
    var journal: [Double] = [], calls: [Double] = []
    let done = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array("ok\n".utf8), stderr: [], truncated: false, durationMs: 0.4)
    let run = "bench-\(getpid())"
    for i in 0..<max(iterations, 200) {
        var t0 = now()
        _ = try ledger.journalRecord(run: run, key: "llm-\(i)", value: .object(["choice": .string("tool call \(i)")]))
        journal.append(Double(now() - t0) / 1000)
        t0 = now()
        guard case .execute(let ticket) = try ledger.begin(BeginRequest(run: run, callId: "c\(i)", tool: "shell", effect: .nonIdempotent,
            arguments: .object(["command": .string("true")]), policyHash: "p", executable: "/bin/true", attempt: 1)) else { fatalError("replayed") }
        _ = try ledger.finish(ticket, outcome: done)
        calls.append(Double(now() - t0) / 1000)
    }
    print(JSONValue.object(["journalRecordUs": .number(median(journal)), "beginFinishUs": .number(median(calls)),
                            "steps": .number(Double(journal.count))]).canonical)
    exit(0)
}

// MARK: - Spawn of /bin/true: ward's shell sandbox vs bare fork+exec vs bwrap vs firejail

// A tool with the shell policy's sandbox (its syscalls, paths, limits, network) whose
// command is /bin/true: the shipped file's [defaults] plus the shell tool's own keys.
var shipped = try PolicyLoader.load(directory: policiesDir)
var tool = try shipped.tool("shell")
tool.name = "true"
tool.command = ["/bin/true"]
shipped.tools["true"] = tool
// The same with network = loopback: a private network namespace per call (what network
// "none" would cost if it were built from namespaces instead of seccomp + Landlock).
var netns = tool
netns.name = "true-netns"
netns.network = .loopback
shipped.tools["true-netns"] = netns
var template = Array("/tmp/ward-bench-XXXXXX".utf8CString)
/// Ledgers, sockets and policies here; tools write only `workspace` inside it (ward refuses
/// a ledger, policy or socket under a write root, and gives the workspace to the tool user).
let base = String(cString: mkdtemp(&template)!)
let workspace = base + "/workspace"
let sandbox = try Sandbox(policies: shipped, workspace: workspace)
let pidnsSandbox = try Sandbox(policies: shipped, workspace: workspace, useCgroups: false)
let directSandbox = try Sandbox(policies: shipped, workspace: workspace, useZygotes: false)

let bwrap = which("bwrap")
let firejail = which("firejail")
let empty = JSONValue.object([:])
// Warm-up: compile the filter, build the ruleset, fill the cgroup pool, page in binaries.
for _ in 0..<20 {
    _ = try sandbox.run(tool: "true", arguments: empty)
    _ = try directSandbox.run(tool: "true", arguments: empty)
    _ = Sandbox.withCStrings(["/bin/true"]) { ward_bench_fork_exec("/bin/true", $0) }
}
let samples = try measureInBlocks(rounds: iterations / blockLength, block: blockLength) { round in
    var ops: [(name: String, run: () throws -> Void)] = [
        ("ward", { let o = try sandbox.run(tool: "true", arguments: empty); precondition(o.status == .succeeded, "sandboxed /bin/true failed: \(o)") }),
        ("direct", { let o = try directSandbox.run(tool: "true", arguments: empty); precondition(o.status == .succeeded) }),
        ("pidns", { let o = try pidnsSandbox.run(tool: "true", arguments: empty); precondition(o.status == .succeeded) }),
        ("netns", { let o = try sandbox.run(tool: "true-netns", arguments: empty); precondition(o.status == .succeeded) }),
        ("bare", { precondition(Sandbox.withCStrings(["/bin/true"]) { ward_bench_fork_exec("/bin/true", $0) } == 0) }),
    ]
    if let bwrap {
        ops.append(("bwrap", { precondition(spawnAndWait([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"]) == 0, "bwrap failed") }))
    }
    // ~25 ms each: sampled, so it does not dominate the run time.
    if let firejail, round % 10 == 0 { ops.append(("firejail", { _ = spawnAndWait([firejail, "--quiet", "--noprofile", "/bin/true"]) })) }
    return ops
}

var rows: [Row] = []
let wardSpawn = median(samples["ward"]!)
rows.append(Row(name: "sandboxed spawn of /bin/true (shell policy)", ward: wardSpawn, peer: "bare fork+exec", peerValue: median(samples["bare"]!), budget: .ratio(1.5)))
if bwrap != nil {
    rows.append(Row(name: "sandboxed spawn of /bin/true (shell policy)", ward: wardSpawn, peer: "bwrap --unshare-all", peerValue: median(samples["bwrap"]!), budget: .ratio(0.25)))
}
if let firejailSamples = samples["firejail"] {
    rows.append(Row(name: "sandboxed spawn of /bin/true (shell policy)", ward: wardSpawn, peer: "firejail --noprofile", peerValue: median(firejailSamples), budget: nil))
}

rows.append(Row(name: "… each call confined anew (no zygote)", ward: median(samples["direct"]!), peer: "bare fork+exec", peerValue: median(samples["bare"]!), budget: nil))
rows.append(Row(name: "… without cgroups (PID namespace per call)", ward: median(samples["pidns"]!), peer: "bare fork+exec", peerValue: median(samples["bare"]!), budget: nil))
rows.append(Row(name: "… network isolated by a netns per call", ward: median(samples["netns"]!), peer: "bare fork+exec", peerValue: median(samples["bare"]!), budget: nil))

// MARK: - Effect traces: what recording a call's effects costs it

// The shell tool's sandbox twice, traced and not, in one sandbox: each measured call is
// the same command under either, alternating, so drift of the machine falls on both.
var traceSet = shipped
var tracedShell = try shipped.tool("shell")
tracedShell.name = "sh_traced"
tracedShell.trace = true
var untracedShell = tracedShell
untracedShell.name = "sh_untraced"
untracedShell.trace = false
traceSet.tools[tracedShell.name] = tracedShell
traceSet.tools[untracedShell.name] = untracedShell
let traceSandbox = try Sandbox(policies: traceSet, workspace: base + "/trace-ws")
/// Runs `command` under `tool`; its wall time in µs.
func timedShell(_ tool: String, _ command: String) throws -> Double {
    let t0 = now()
    let o = try traceSandbox.run(tool: tool, arguments: .object(["command": .string(command)]))
    precondition(o.status == .succeeded, "\(tool) \(command): \(String(decoding: o.stderr, as: UTF8.self))")
    return Double(now() - t0) / 1000
}
_ = try timedShell("sh_untraced", "git init -q repo && mkdir tardir && i=0; while [ $i -lt 2000 ]; do echo $i > tardir/f$i; i=$((i+1)); done")
var gitTimes: [String: [Double]] = [:], tarTimes: [String: [Double]] = [:]
for round in 0..<max(iterations / 10, 20) {
    for variant in round % 2 == 0 ? ["sh_traced", "sh_untraced"] : ["sh_untraced", "sh_traced"] {
        // 500 changed files (written untimed), then the commit that takes them.
        _ = try timedShell("sh_untraced", "cd repo && i=0; while [ $i -lt 500 ]; do echo \(round)\(variant) > f$i; i=$((i+1)); done")
        gitTimes[variant, default: []].append(try timedShell(variant, "cd repo && git add -A && git commit -qm 'round \(round)'"))
        tarTimes[variant, default: []].append(try timedShell(variant, "tar cf archive.tar tardir"))
    }
}
rows.append(Row(name: "git add + commit of 500 files, traced", ward: median(gitTimes["sh_traced"]!), peer: "untraced",
                peerValue: median(gitTimes["sh_untraced"]!), budget: .ratio(1.15)))
rows.append(Row(name: "tar cf of 2,000 files, traced", ward: median(tarTimes["sh_traced"]!), peer: "untraced",
                peerValue: median(tarTimes["sh_untraced"]!), budget: .ratio(1.05)))

// MARK: - The ledger at synchronous=FULL: durable steps, begin+finish, checkpoint storage

let ledger = try Ledger(path: base + "/bench-ledger.sqlite", durability: .full)
var checkpointTimes: [Double] = [], journalTimes: [Double] = [], callTimes: [Double] = []
let benchOutcome = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array("ok\n".utf8), stderr: [], truncated: false, durationMs: 0.4)
for i in 0..<max(iterations, 200) {
    var t0 = now()
    _ = try ledger.saveCheckpoint(run: "bench", state: Array("{\"step\":\(i),\"plan\":\"write the pages, build, check, commit\"}".utf8))
    checkpointTimes.append(Double(now() - t0) / 1000)
    t0 = now()
    _ = try ledger.journalRecord(run: "bench", key: "llm-\(i)", value: .object(["choice": .string("tool call \(i)")]))
    journalTimes.append(Double(now() - t0) / 1000)
    t0 = now()
    guard case .execute(let ticket) = try ledger.begin(BeginRequest(run: "bench", callId: "c\(i)", tool: "shell", effect: .nonIdempotent,
        arguments: .object(["command": .string("true")]), policyHash: "p", executable: "/bin/true", attempt: 1)) else { fatalError("replayed") }
    _ = try ledger.finish(ticket, outcome: benchOutcome)
    callTimes.append(Double(now() - t0) / 1000)
}
var items: [JSONValue] = []
var finalState: [UInt8] = []
for i in 0..<200 {
    items.append(.object(["step": .number(Double(i)), "note": .string(String(repeating: "x", count: 1000))]))
    finalState = Array(JSONValue.object(["items": .array(items)]).canonical.utf8)
    _ = try ledger.saveCheckpoint(run: "storage", state: finalState)
}
let storedBytes = Double(try ledger.checkpointStorageBytes(run: "storage"))

struct Peers {
    var langgraph: Double?, dbos: Double?, langgraphStorage: Double?
    /// LangGraph on ward (ward_client's WardSaver) against SqliteSaver, the same 200-step graph:
    /// time per step and storage of each; and the Python client's journal.record round trip.
    var wardSaverStep: Double?, sqliteSaverStep: Double?, wardSaverStorage: Double?, sqliteSaverStorage: Double?, pythonJournal: Double?
    var errors: [String]
}
var peers = Peers(errors: ["peers not measured (Scripts/bench measures them)"])
if let peersPath, let fp = fopen(peersPath, "r") {
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while case let n = fread(&buf, 1, 4096, fp), n > 0 { bytes += buf[0..<n] }
    fclose(fp)
    if let json = try? JSONValue.parse(bytes).objectValue {
        func number(_ key: String) -> Double? { if case .number(let d)? = json[key] { return d }; return nil }
        let errors: [String] = { if case .array(let a)? = json["errors"] { return a.compactMap(\.stringValue) }; return [] }()
        peers = Peers(langgraph: number("langgraphStepMicros"), dbos: number("dbosStepMicros"), langgraphStorage: number("langgraphStorageBytes"),
                      wardSaverStep: number("langgraphWardStepMicros"), sqliteSaverStep: number("langgraphSqliteLoopStepMicros"),
                      wardSaverStorage: number("langgraphWardStorageBytes"), sqliteSaverStorage: number("langgraphSqliteLoopStorageBytes"),
                      pythonJournal: number("pythonJournalMicros"), errors: errors)
    }
}
let checkpointStep = median(checkpointTimes), journalStep = median(journalTimes)
rows.append(Row(name: "durable step: checkpoint.save (small state)", ward: checkpointStep, peer: "", peerValue: nil, budget: .atMost(300)))
rows.append(Row(name: "durable step: journal.record", ward: journalStep, peer: "", peerValue: nil, budget: .atMost(300)))
rows.append(Row(name: "begin + finish of one call", ward: median(callTimes), peer: "", peerValue: nil, budget: .atMost(500)))
// What checking a request's params member by member adds to every tool.call: the Params
// reader, two identifiers and the arguments object, as Supervisor.toolCall does.
let typicalParams = try JSONValue.parse(#"{"callId":"step-47","tool":"shell","arguments":{"command":"make -C site build && ls -la site/out"},"checkpoint":{"step":47,"notes":"résumé"}}"#)
var validationTimes: [Double] = []
var validated = 0
for _ in 0..<max(iterations, 200) {
    let t0 = now()
    for _ in 0..<100 {
        let p = try Params(method: "tool.call", typicalParams, known: ["callId", "tool", "arguments", "checkpoint"])
        validated &+= (try p.identifier("callId", required: true)?.utf8.count ?? 0) + (try p.identifier("tool", required: true)?.utf8.count ?? 0)
            + (try p.object("arguments")?.count ?? 0)
    }
    validationTimes.append(Double(now() - t0) / 1000 / 100)
}
precondition(validated > 0)
rows.append(Row(name: "params validation of a tool.call request", ward: median(validationTimes), peer: "", peerValue: nil, budget: .atMost(5)))
if let lg = peers.langgraph { rows.append(Row(name: "durable step: checkpoint.save (small state)", ward: checkpointStep, peer: "LangGraph SqliteSaver step", peerValue: lg, budget: nil)) }
if let d = peers.dbos { rows.append(Row(name: "durable step: checkpoint.save (small state)", ward: checkpointStep, peer: "DBOS step (SQLite)", peerValue: d, budget: nil)) }
rows.append(Row(name: "checkpoint storage, 200 steps × 1 KiB appended", ward: storedBytes, peer: "the final state", peerValue: Double(finalState.count),
                budget: .ratio(2), unit: .bytes))
if let lgs = peers.langgraphStorage {
    rows.append(Row(name: "checkpoint storage, 200 steps × 1 KiB appended", ward: storedBytes, peer: "LangGraph SqliteSaver", peerValue: lgs, budget: nil, unit: .bytes))
}

// MARK: - The supervisor: tool.call through the socket, replay, resume, throughput, RSS

/// A connection through ward's blocking client: one write and one read a request. The bench
/// measures requests that succeed, so a refusal ends it.
func agentConnection(_ path: String) -> WardConnection {
    do { return try WardConnection(socketPath: path) } catch { fatalError("\(path): \(error)") }
}

extension WardConnection {
    /// A request's result; an error answer ends the bench.
    func result(_ method: String, _ params: JSONValue) -> JSONValue {
        do { return try request(method, params) } catch { fatalError("\(method): \(error)") }
    }

    /// A tool call, its result unread: decoding it is not what is measured.
    func toolCall(_ callId: String, tool: String = "true", arguments: JSONValue = .object([:])) {
        _ = result("tool.call", .object(["callId": .string(callId), "tool": .string(tool), "arguments": arguments]))
    }
}

func startServer(run: String, ledgerPath: String) throws -> SocketServer {
    let l = try Ledger(path: ledgerPath, durability: .full)
    let supervisor = Supervisor(ledger: l, sandbox: sandbox, runID: run, attempt: try l.startAttempt(run: run))
    let server = try SocketServer(path: base + "/\(run).sock", supervisor: supervisor, publishToken: true)
    server.start()
    return server
}

// A real `ward serve` (its own process, as agents meet it), with the shipped policies plus a
// `true` tool under the shell tool's sandbox.
let wardBinary = (CommandLine.arguments[0] as NSString).deletingLastPathComponent + "/ward"
let benchPolicies = base + "/policies"
try FileManager.default.createDirectory(atPath: benchPolicies, withIntermediateDirectories: true)
try FileManager.default.copyItem(atPath: policiesDir + "/syscall-sets.toml", toPath: benchPolicies + "/syscall-sets.toml")
// `true_idempotent` is the same tool without the output capture of a non-idempotent call.
try (String(contentsOfFile: policiesDir + "/tools.toml", encoding: .utf8) + """

    [tools.true]
    command = ["/bin/true"]
    write = ["{workspace}"]

    [tools.true_idempotent]
    command = ["/bin/true"]
    write = ["{workspace}"]
    effect = "idempotent"

    [tools.true_untraced]
    command = ["/bin/true"]
    write = ["{workspace}"]
    trace = false

    """)
    .write(toFile: benchPolicies + "/tools.toml", atomically: true, encoding: .utf8)
let callServe = try startServe(wardBinary, name: "calls", policies: benchPolicies)
let client = agentConnection(callServe.socket)
for i in 0..<20 { client.toolCall("warm-\(i)") }
// The same policies plus a gated tool (`approve = true`), on a `ward serve` of their own:
// what approval gates cost the calls of tools that have none.
let gatedPolicies = base + "/policies-gated"
try FileManager.default.createDirectory(atPath: gatedPolicies, withIntermediateDirectories: true)
try FileManager.default.copyItem(atPath: benchPolicies + "/syscall-sets.toml", toPath: gatedPolicies + "/syscall-sets.toml")
try (String(contentsOfFile: benchPolicies + "/tools.toml", encoding: .utf8) + """

    [tools.true_gated]
    command = ["/bin/true"]
    approve = true
    """).write(toFile: gatedPolicies + "/tools.toml", atomically: true, encoding: .utf8)
let gatedServe = try startServe(wardBinary, name: "gated", policies: gatedPolicies)
let gatedClient = agentConnection(gatedServe.socket)
for i in 0..<20 { gatedClient.toolCall("warm-\(i)") }
var gatedCount = 0
// The same call from an MCP host: `ward mcp` over stdio, on a run of its own in the same ledger.
let shellTrue = JSONValue.object(["command": .string("/bin/true")])
let mcp = try MCPHost(wardBinary, ["mcp", "--policies", benchPolicies, "--ledger", base + "/calls.sqlite", "--workspace", base + "/calls-ws",
                                   "--run-id", "calls-mcp"])
var mcpCount = 0
@MainActor func mcpCall() {
    let answer = mcp.call("tools/call", .object(["name": .string("shell"), "arguments": shellTrue,
                                                 "_meta": .object([MCPServer.callIdKey: .string("m\(mcpCount)")])]))
    precondition(answer.contains(Array(#""isError":false"#.utf8)), "ward mcp: \(String(decoding: answer, as: UTF8.self))")
    mcpCount += 1
}
for _ in 0..<20 { mcpCall() }
var callCount = 0
var untracedCount = 0
var idempotentCount = 0
var shellCount = 0
let callSamples = try measureInBlocks(rounds: iterations / blockLength, block: blockLength) { _ in
    var ops: [(name: String, run: () throws -> Void)] = [
        ("call", { client.toolCall("c\(callCount)"); callCount += 1 }),
        ("beside-gate", { gatedClient.toolCall("g\(gatedCount)"); gatedCount += 1 }),
        ("idempotent", { client.toolCall("i\(idempotentCount)", tool: "true_idempotent"); idempotentCount += 1 }),
        ("untraced", { client.toolCall("u\(untracedCount)", tool: "true_untraced"); untracedCount += 1 }),
        ("shell", { client.toolCall("s\(shellCount)", tool: "shell", arguments: shellTrue); shellCount += 1 }),
        ("mcp", mcpCall),
        ("bare", { _ = Sandbox.withCStrings(["/bin/true"]) { ward_bench_fork_exec("/bin/true", $0) } }),
    ]
    if let bwrap { ops.append(("bwrap", { _ = spawnAndWait([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"]) })) }
    return ops
}
let fullCall = callSamples["call"]!, bareAgain = callSamples["bare"]!
var replay: [Double] = []
// Replays as a resumed agent makes them: the recorded calls, one after another.
for i in 0..<callCount {
    let t0 = now()
    client.toolCall("c\(i)")
    replay.append(Double(now() - t0) / 1000)
}
rows.append(Row(name: "tool.call of /bin/true through ward serve", ward: median(fullCall), peer: "bare fork+exec", peerValue: median(bareAgain), budget: .ratio(2.5)))
if let bwrapAgain = callSamples["bwrap"] {
    rows.append(Row(name: "tool.call of /bin/true through ward serve", ward: median(fullCall), peer: "bwrap --unshare-all", peerValue: median(bwrapAgain), budget: .ratio(0.4)))
}
rows.append(Row(name: "tool.call of /bin/true, a gated tool in its policies", ward: median(callSamples["beside-gate"]!), peer: "no gated tool",
                peerValue: median(fullCall), budget: .ratio(1.02)))
rows.append(Row(name: "tools/call of shell /bin/true through ward mcp", ward: median(callSamples["mcp"]!), peer: "tool.call through the socket",
                peerValue: median(callSamples["shell"]!), budget: .ratio(1.2)))
rows.append(Row(name: "tool.call of /bin/true, traced (non-idempotent's default)", ward: median(fullCall), peer: "trace = false",
                peerValue: median(callSamples["untraced"]!), budget: .ratio(1.1)))
rows.append(Row(name: "tool.call, non-idempotent: output captured", ward: median(callSamples["untraced"]!), peer: "idempotent, not captured",
                peerValue: median(callSamples["idempotent"]!), budget: .ratio(1.1)))
rows.append(Row(name: "replay of a recorded call", ward: median(replay), peer: "", peerValue: nil, budget: .atMost(150)))

// The same, at an agent's pace: each run after 50 ms idle (a model thinking between calls).
// Idle costs everything more here (caches, CPU wake-up), and it is what agents meet: a
// step that only runs fast back to back (a cgroup move that waits for an RCU grace period
// after idle did: 10 ms per call) shows here and not above.
var pacedSamples: [String: [Double]] = [:]
let pacedOps: [(name: String, run: () -> Void)] = [
    ("call", { client.toolCall("paced\(callCount)"); callCount += 1 }),
    ("bare", { _ = Sandbox.withCStrings(["/bin/true"]) { ward_bench_fork_exec("/bin/true", $0) } }),
] + (bwrap.map { b in [("bwrap", { _ = spawnAndWait([b, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"]) })] } ?? [])
for round in 0..<max(iterations / 5, 20) {
    for k in 0..<pacedOps.count {
        let op = pacedOps[(k + round) % pacedOps.count]
        usleep(50_000)
        let t0 = now()
        op.run()
        pacedSamples[op.name, default: []].append(Double(now() - t0) / 1000)
    }
}
rows.append(Row(name: "tool.call of /bin/true, each after 50 ms idle", ward: median(pacedSamples["call"]!), peer: "bare fork+exec",
                peerValue: median(pacedSamples["bare"]!), budget: nil))
if let pacedBwrap = pacedSamples["bwrap"] {
    rows.append(Row(name: "tool.call of /bin/true, each after 50 ms idle", ward: median(pacedSamples["call"]!), peer: "bwrap --unshare-all",
                    peerValue: median(pacedBwrap), budget: nil))
}

// Durable steps through the socket (what an agent pays), against the peers' steps.
var socketJournal: [Double] = [], socketCheckpoint: [Double] = []
for i in 0..<iterations {
    var t = now()
    _ = client.result("journal.record", .object(["key": .string("k\(i)"), "value": .string("model answer \(i)")]))
    socketJournal.append(Double(now() - t) / 1000)
    t = now()
    _ = client.result("checkpoint.save", .object(["state": .object(["step": .number(Double(i)), "plan": .string("write, build, check, commit")])]))
    socketCheckpoint.append(Double(now() - t) / 1000)
}
let socketStep = median(socketCheckpoint)
rows.append(Row(name: "durable step through the socket: checkpoint.save", ward: socketStep, peer: "", peerValue: nil, budget: .atMost(300)))
rows.append(Row(name: "durable step through the socket: journal.record", ward: median(socketJournal), peer: "", peerValue: nil, budget: .atMost(300)))
if let lg = peers.langgraph { rows.append(Row(name: "durable step through the socket", ward: socketStep, peer: "LangGraph SqliteSaver step", peerValue: lg, budget: nil)) }
if let d = peers.dbos { rows.append(Row(name: "durable step through the socket", ward: socketStep, peer: "DBOS step (SQLite)", peerValue: d, budget: nil)) }
if let python = peers.pythonJournal {
    rows.append(Row(name: "journal.record, Python client", ward: python, peer: "Swift client",
                    peerValue: median(socketJournal), budget: .ratio(2)))
}
if let ward = peers.wardSaverStep, let sqlite = peers.sqliteSaverStep {
    rows.append(Row(name: "LangGraph step (200 steps), WardSaver", ward: ward, peer: "SqliteSaver", peerValue: sqlite, budget: .ratio(0.5)))
}
if let ward = peers.wardSaverStorage, let sqlite = peers.sqliteSaverStorage {
    rows.append(Row(name: "LangGraph storage (200 steps), WardSaver", ward: ward, peer: "SqliteSaver", peerValue: sqlite,
                    budget: .ratio(0.05), unit: .bytes))
}

// Cost growth: a durable step and a replay with 1k, 10k (and 100k) calls already recorded.
let growthSizes = iterations >= 300 ? [1_000, 10_000, 100_000] : [1_000, 10_000]
var growth: [(Int, Double, Double)] = []
do {
    let path = base + "/growth.sqlite"
    let filler = try Ledger(path: path, durability: .normal)
    let growthServer = try startServer(run: "growth", ledgerPath: path)
    let g = agentConnection(growthServer.path)
    var recorded = 0
    for size in growthSizes {
        while recorded < size {
            guard case .execute(let t) = try filler.begin(BeginRequest(run: "growth", callId: "g\(recorded)", tool: "true", effect: .nonIdempotent,
                arguments: .object([:]), policyHash: "p", executable: "/bin/true", attempt: 1)) else { fatalError() }
            _ = try filler.finish(t, outcome: benchOutcome)
            recorded += 1
        }
        var steps: [Double] = [], replays: [Double] = []
        var rng = SystemRandomNumberGenerator()
        for i in 0..<200 {
            var t = now()
            _ = g.result("journal.record", .object(["key": .string("s\(size)-\(i)"), "value": .number(Double(i))]))
            steps.append(Double(now() - t) / 1000)
            t = now()
            g.toolCall("g\(Int.random(in: 0..<size, using: &rng))")
            replays.append(Double(now() - t) / 1000)
        }
        growth.append((size, median(steps), median(replays)))
        if size != growthSizes[0] {
            rows.append(Row(name: "durable step, \(size) calls recorded", ward: median(steps), peer: "the same at \(growthSizes[0])", peerValue: growth[0].1, budget: .flat))
            rows.append(Row(name: "replay, \(size) calls recorded", ward: median(replays), peer: "the same at \(growthSizes[0])", peerValue: growth[0].2, budget: .flat))
        }
    }
    growthServer.stop()
}

// Resume after a crash at step 10,000: from run.resume to the first new result.
let resumeSteps = iterations >= 300 ? 10_000 : 2_000
do {
    let path = base + "/resume.sqlite"
    let l = try Ledger(path: path, durability: .normal)
    _ = try l.startAttempt(run: "resume")
    for i in 0..<resumeSteps {
        guard case .execute(let t) = try l.begin(BeginRequest(run: "resume", callId: "s\(i)", tool: "true", effect: .nonIdempotent,
            arguments: .object([:]), policyHash: "p", executable: "/bin/true", attempt: 1,
            checkpoint: i % 100 == 99 ? Array("{\"step\":\(i)}".utf8) : nil)) else { fatalError() }
        _ = try l.finish(t, outcome: benchOutcome)
    }
}
let resumeServer = try startServer(run: "resume", ledgerPath: base + "/resume.sqlite")
let resumeClient = agentConnection(resumeServer.path)
var t0 = now()
let resumed = resumeClient.result("run.resume", .object([:]))
resumeClient.toolCall("s\(resumeSteps)")
let resumeMicros = Double(now() - t0) / 1000
precondition(resumed.objectValue?["checkpoint"] != .null)
rows.append(Row(name: "resume after a crash at step \(resumeSteps)", ward: resumeMicros, peer: "", peerValue: nil, budget: .atMost(50_000)))
resumeServer.stop()

/// Runs `argv` to its end, its output discarded; its wall time (µs) and peak RSS (bytes),
/// the latter from wait4's rusage: the child's own, nothing of the bench's.
func measureProcess(_ argv: [String]) -> (status: Int32, micros: Double, maxRSS: Double) {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    var pid: pid_t = 0
    let t0 = now()
    let rc = Sandbox.withCStrings(argv) { cArgv in posix_spawn(&pid, argv[0], &actions, nil, UnsafeMutablePointer(mutating: cArgv), environ) }
    guard rc == 0 else { return (-1, 0, 0) }
    var status: Int32 = 0
    var usage = rusage()
    wait4(pid, &status, 0, &usage)
    return (status, Double(now() - t0) / 1000, Double(usage.ru_maxrss) * 1024)
}

// `ward ledger verify` of 100,000 events, in its own process as an operator runs it. An
// agent that checkpoints at every call makes three events a step (checkpoint.save,
// call.begin, call.finish): 33,333 steps and the run's attempt.
do {
    let path = base + "/verify.sqlite"
    let l = try Ledger(path: path, durability: .normal)
    _ = try l.startAttempt(run: "verify")
    for i in 0..<33_333 {
        guard case .execute(let t) = try l.begin(BeginRequest(run: "verify", callId: "v\(i)", tool: "true", effect: .nonIdempotent,
            arguments: .object(["i": .number(Double(i))]), policyHash: "p", executable: "/bin/true", attempt: 1,
            checkpoint: Array("{\"step\":\(i),\"plan\":\"write the pages, build, check, commit\"}".utf8))) else { fatalError() }
        _ = try l.finish(t, outcome: benchOutcome)
    }
    let verified = measureProcess([wardBinary, "ledger", "verify", "--ledger", path])
    precondition(verified.status == 0, "ward ledger verify found a problem in a ledger nobody touched (wait status \(verified.status))")
    rows.append(Row(name: "ledger verify of 100,000 events", ward: verified.micros, peer: "", peerValue: nil, budget: .atMost(2_000_000)))
    rows.append(Row(name: "ledger verify of 100,000 events: peak RSS", ward: verified.maxRSS, peer: "", peerValue: nil,
                    budget: .atMost(64 * 1_048_576), unit: .bytes))
}

// `ward runs fork` of a run with 10,000 calls, each handed in with a checkpoint, at a
// checkpoint saved after the last: every call is copied (30,002 events), as its own process.
do {
    let path = base + "/fork.sqlite"
    let l = try Ledger(path: path, durability: .normal)
    _ = try l.startAttempt(run: "origin")
    for i in 0..<10_000 {
        guard case .execute(let t) = try l.begin(BeginRequest(run: "origin", callId: "f\(i)", tool: "true", effect: .nonIdempotent,
            arguments: .object(["i": .number(Double(i))]), policyHash: "p", executable: "/bin/true", attempt: 1,
            checkpoint: Array("{\"step\":\(i),\"plan\":\"write the pages, build, check, commit\"}".utf8))) else { fatalError() }
        _ = try l.finish(t, outcome: benchOutcome)
    }
    let last = try l.saveCheckpoint(run: "origin", state: Array("{\"step\":10000}".utf8))
    let forked = measureProcess([wardBinary, "runs", "fork", "origin", "--at", String(last), "--run-id", "forked", "--ledger", path])
    precondition(forked.status == 0, "ward runs fork failed (wait status \(forked.status))")
    precondition(measureProcess([wardBinary, "ledger", "verify", "--run", "forked", "--ledger", path]).status == 0, "ward ledger verify found a problem in the fork")
    rows.append(Row(name: "runs fork of a run with 10,000 calls", ward: forked.micros, peer: "", peerValue: nil, budget: .atMost(1_000_000)))
}

// `ward ledger report` of a run with 10,000 calls, each handed in with a checkpoint (30,001
// events), as its own process: reading the run, verifying it, writing the page. Its time
// and the page's size, which a browser must open at once.
do {
    let path = base + "/report.sqlite"
    let l = try Ledger(path: path, durability: .normal)
    _ = try l.startAttempt(run: "report")
    for i in 0..<10_000 {
        guard case .execute(let t) = try l.begin(BeginRequest(run: "report", callId: "r\(i)", tool: "true", effect: .nonIdempotent,
            arguments: .object(["i": .number(Double(i))]), policyHash: "p", executable: "/bin/true", attempt: 1,
            checkpoint: Array("{\"step\":\(i),\"plan\":\"write the pages, build, check, commit\"}".utf8))) else { fatalError() }
        _ = try l.finish(t, outcome: benchOutcome)
    }
    let page = base + "/report.html"
    let reported = measureProcess([wardBinary, "ledger", "report", "--run", "report", "--ledger", path, "--html", page])
    precondition(reported.status == 0, "ward ledger report failed (wait status \(reported.status))")
    var st = stat()
    precondition(stat(page, &st) == 0, "ward ledger report wrote no page")
    rows.append(Row(name: "ledger report of a run with 10,000 calls", ward: reported.micros, peer: "", peerValue: nil, budget: .atMost(2_000_000)))
    rows.append(Row(name: "ledger report of a run with 10,000 calls: page size", ward: Double(st.st_size), peer: "", peerValue: nil,
                    budget: .atMost(5_000_000), unit: .bytes))
}

// 8 agents in parallel, each with its own connection, N calls each.
let perAgent = iterations >= 300 ? 1000 : 250
let throughputServer = try startServer(run: "load", ledgerPath: base + "/load.sqlite")
t0 = now()
DispatchQueue.concurrentPerform(iterations: 8) { agent in
    let c = agentConnection(throughputServer.path)
    for i in 0..<perAgent { c.toolCall("a\(agent)-\(i)") }
}
let seconds = Double(now() - t0) / 1e9
let throughput = Double(8 * perAgent) / seconds
throughputServer.stop()
rows.append(Row(name: "throughput, 8 agents × \(perAgent) calls", ward: throughput, peer: "", peerValue: nil, budget: .atLeast(1000), unit: .perSecond))

/// Starts `ward serve` from `binary` with the shipped policies; returns once it listens.
@MainActor func startServe(_ binary: String, name: String, policies: String = policiesDir) throws -> (process: Process, socket: String) {
    let serve = Process()
    serve.executableURL = URL(fileURLWithPath: binary)
    let socket = base + "/\(name).sock"
    serve.arguments = ["serve", "--policies", policies, "--ledger", base + "/\(name).sqlite", "--workspace", base + "/\(name)-ws",
                       "--socket", socket, "--run-id", name]
    let out = Pipe()
    serve.standardOutput = out
    try serve.run()
    _ = out.fileHandleForReading.availableData  // the socket path: it listens
    return (serve, socket)
}

/// An MCP host's end of `ward mcp` (or of another stdio MCP server): one request line out,
/// the answer line in (notifications skipped).
final class MCPHost {
    let process = Process()
    private let input = Pipe(), output = Pipe()
    private var framer = LineFramer()
    private var nextID = 0

    init(_ binary: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        try process.run()
    }

    func call(_ method: String, _ params: JSONValue) -> [UInt8] {
        nextID += 1
        precondition(OS.writeAll(input.fileHandleForWriting.fileDescriptor, RPCRequest.line(id: .number(Double(nextID)), method: method, params: params) + [0x0A]))
        while true {
            let line = readLine()
            if !line.starts(with: Array(#"{"jsonrpc":"2.0","method""#.utf8)) { return line }
        }
    }

    func notify(_ method: String) {
        precondition(OS.writeAll(input.fileHandleForWriting.fileDescriptor,
                                 JSONValue.object(["jsonrpc": .string("2.0"), "method": .string(method)]).canonicalBytes + [0x0A]))
    }

    func readLine() -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            if let line = try? framer.next() { return line }
            let n = chunk.withUnsafeMutableBytes { OS.read(output.fileHandleForReading.fileDescriptor, into: $0) } ?? 0
            precondition(n > 0, "the MCP server closed its stdout")
            chunk.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
    }

    func close() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// Exec to the answer to `initialize`, as a host starting a server per session waits for it.
func startUp(_ binary: String, _ arguments: [String]) throws -> Double {
    let t0 = now()
    let host = try MCPHost(binary, arguments)
    _ = host.call("initialize", .object(["protocolVersion": .string("2025-11-25"), "capabilities": .object([:]),
                                         "clientInfo": .object(["name": .string("ward-bench"), "version": .string("1")])]))
    let elapsed = Double(now() - t0) / 1000
    host.close()
    return elapsed
}

func stopServe(_ serve: Process) {
    serve.terminate()
    serve.waitUntilExit()
}

stopServe(callServe.process)
stopServe(gatedServe.process)
mcp.close()
do {
    // A new `ward mcp` per session (langchain-mcp-adapters starts one per call): its start,
    // against an MCP server on the official Python SDK that lists as many tools.
    let wardArguments = ["mcp", "--policies", benchPolicies, "--ledger", base + "/start.sqlite", "--workspace", base + "/start-ws", "--run-id", "start"]
    let tools = try PolicyLoader.load(directory: benchPolicies).tools.count
    // Each op records its own figure: the block's timing would count the server's exit too.
    _ = try measureInBlocks(rounds: 4, block: 5) { _ in
        var ops: [(name: String, run: () throws -> Void)] = []
        ops.append(("ward", { startTimes.append(try startUp(wardBinary, wardArguments)) }))
        if let mcpPeer { ops.append(("python", { peerStartTimes.append(try startUp(mcpPeer.python, [mcpPeer.script, String(tools)])) })) }
        return ops
    }
    rows.append(Row(name: "ward mcp start: exec to the initialize answer", ward: median(startTimes), peer: "", peerValue: nil, budget: .atMost(50_000)))
    if !peerStartTimes.isEmpty {
        rows.append(Row(name: "ward mcp start: exec to the initialize answer", ward: median(startTimes),
                        peer: "Python MCP SDK server, \(tools) tools", peerValue: median(peerStartTimes), budget: .ratio(0.2)))
    }
}
do {
    // A `tools/call` through `ward mcp proxy` (sandboxed server, ledger records before and
    // after) against the same server run directly and unsandboxed, by the same client,
    // interleaved: what the proxy adds to a real server's call.
    let timeServer = "/opt/ward-mcp-servers/bin/mcp-server-time"
    if access(timeServer, X_OK) == 0 {
        try FileManager.default.copyItem(atPath: policiesDir + "/mcp-servers.toml", toPath: benchPolicies + "/mcp-servers.toml")
        let hosts = [
            try MCPHost(wardBinary, ["mcp", "proxy", "--policies", benchPolicies, "--ledger", base + "/proxy.sqlite", "--workspace", base + "/proxy-ws",
                                     "--run-id", "proxy", "time"]),
            try MCPHost(timeServer, []),
        ]
        let request = JSONValue.object(["name": .string("get_current_time"), "arguments": .object(["timezone": .string("UTC")])])
        for host in hosts {
            _ = host.call("initialize", .object(["protocolVersion": .string("2025-11-25"), "capabilities": .object([:]),
                                                 "clientInfo": .object(["name": .string("ward-bench"), "version": .string("1")])]))
            host.notify("notifications/initialized")
        }
        var times: [[Double]] = [[], []]
        for i in 0..<(iterations + 20) {
            for k in 0..<2 {
                let which = (i + k) % 2
                let t0 = now()
                let answer = hosts[which].call("tools/call", request)
                precondition(answer.contains(Array(#""isError":false"#.utf8)), "get_current_time: \(String(decoding: answer, as: UTF8.self))")
                if i >= 20 { times[which].append(Double(now() - t0) / 1000) }
            }
        }
        rows.append(Row(name: "MCP tools/call through ward mcp proxy", ward: median(times[0]), peer: "mcp-server-time direct, bare",
                        peerValue: median(times[1]), budget: .ratio(1.3)))
        for host in hosts { host.close() }
    } else {
        peers.errors.append("\(timeServer) is not installed (Scripts/setup --servers): the ward mcp proxy row is skipped")
    }
}
do {
    // RSS of a real `ward serve` holding 100 idle connections.
    let (serve, socket) = try startServe(wardBinary, name: "idle")
    var idle: [WardConnection] = []
    for _ in 0..<100 { idle.append(agentConnection(socket)) }
    _ = idle[99].result("run.resume", .object([:]))
    usleep(200_000)
    if let status = try? String(contentsOfFile: "/proc/\(serve.processIdentifier)/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
       let kb = Double(line.split(separator: " ").dropFirst().first ?? "") {
        rows.append(Row(name: "ward serve RSS, 100 idle connections", ward: kb * 1024, peer: "", peerValue: nil, budget: .atMost(50 * 1_048_576), unit: .bytes))
    }
    idle.removeAll()
    stopServe(serve)

    // Fail points compiled in but not armed vs compiled out (-DWARD_NO_FAILPOINTS): the
    // shell tool through two real `ward serve`s, interleaved.
    if let noFailPoints = wardWithoutFailPoints {
        let with = try startServe(wardBinary, name: "failpoints-in"), without = try startServe(noFailPoints, name: "failpoints-out")
        let clients = [agentConnection(with.socket), agentConnection(without.socket)]
        var times: [[Double]] = [[], []]
        for i in 0..<(iterations + 20) {
            for k in 0..<2 {
                let which = (i + k) % 2
                let t0 = now()
                _ = clients[which].result("tool.call", .object(["callId": .string("c\(i)"), "tool": .string("shell"), "arguments": .object(["command": .string("true")])]))
                if i >= 20 { times[which].append(Double(now() - t0) / 1000) }
            }
        }
        rows.append(Row(name: "tool.call (shell), fail points in but off", ward: median(times[0]), peer: "fail points compiled out", peerValue: median(times[1]), budget: .ratio(1.05)))
        stopServe(with.process)
        stopServe(without.process)
    }
}

// MARK: - In-process costs of preparing a policy (done once per tool, then cached)

func timeIt(_ n: Int, _ body: () throws -> Void) rethrows -> Double {
    var xs: [Double] = []
    for _ in 0..<n {
        let t0 = now()
        try body()
        xs.append(Double(now() - t0) / 1000)
    }
    return median(xs)
}
let compile = try timeIt(200) { _ = try Sandbox.compileFilter(for: tool) }
let filterSize = try Sandbox.compileFilter(for: tool).instructionCount

// MARK: - Report

func f(_ x: Double, _ unit: Row.Unit = .micros) -> String {
    switch unit {
    case .micros: x >= 1000 ? String(format1: x / 1000) + " ms" : String(format1: x) + " µs"
    case .bytes: x >= 1_048_576 ? String(format1: x / 1_048_576) + " MiB" : String(format1: x / 1024) + " KiB"
    case .perSecond: String(format1: x) + "/s"
    }
}
extension String {
    init(format1 x: Double) {
        let r = (x * 10).rounded() / 10
        self = r == r.rounded() ? "\(Int(r)).0" : "\(r)"
    }
    func pad(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
extension Row {
    var budgetText: String {
        guard let budget, let met else { return "—" }
        let verdict = met ? "met" : "MISSED"
        switch budget {
        case .ratio(let x): return "≤ \(x)× \(verdict)"
        case .atMost(let x): return "≤ \(f(x, unit)) \(verdict)"
        case .atLeast(let x): return "≥ \(f(x, unit)) \(verdict)"
        case .flat: return "flat \(met ? "yes" : "NO")"
        }
    }
}
var uts = utsname()
uname(&uts)
let kernel = withUnsafePointer(to: &uts.release) { $0.withMemoryRebound(to: CChar.self, capacity: 65) { String(cString: $0) } }
let cores = sysconf(Int32(_SC_NPROCESSORS_ONLN))
print("ward bench — \(iterations) iterations in rotating blocks of \(blockLength), kernel \(kernel), \(cores) cores, tree kill: \(sandbox.treeKill.rawValue)")
print("figure".pad(52) + "ward".pad(11) + "peer".pad(28) + "peer value".pad(12) + "ratio".pad(8) + "budget")
for r in rows {
    print(r.name.pad(52) + f(r.ward, r.unit).pad(11) + (r.peer.isEmpty ? "—" : r.peer).pad(28) + (r.peerValue.map { f($0, r.unit) } ?? "").pad(12)
          + (r.ratio.map { String(format1: $0 * 100) + "%" } ?? "").pad(8) + r.budgetText)
}
for e in peers.errors { print("note: \(e)") }
print("seccomp filter compile (libseccomp, tree layout, \(filterSize) instructions, once per tool): \(f(compile))")

if let jsonPath {
    let json = JSONValue.object([
        "kernel": .string(kernel),
        "cores": .number(Double(cores)),
        "iterations": .number(Double(iterations)),
        "treeKill": .string(sandbox.treeKill.rawValue),
        "rows": .array(rows.map { r in
            .object(["figure": .string(r.name), "unit": .string(r.unit.rawValue), "ward": .number(r.ward),
                     "peer": r.peer.isEmpty ? .null : .string(r.peer), "peerValue": r.peerValue.map { .number($0) } ?? .null,
                     "ratio": r.ratio.map { .number($0) } ?? .null, "budget": r.budget == nil ? .null : .string(r.budgetText),
                     "met": r.met.map { .bool($0) } ?? .null])
        }),
        "notes": .array(peers.errors.map { .string($0) }),
        "filterCompileMicros": .number(compile),
    ])
    let fp = fopen(jsonPath, "w")!
    fputs(json.canonical + "\n", fp)
    fclose(fp)
}
exit(rows.contains { $0.met == false } ? 1 : 0)
