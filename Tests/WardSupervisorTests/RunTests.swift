import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// The ward binary and the repository's python/ (the Python client).
enum Paths {
    static var repository: String { BuildProducts.repository }
    static var ward: String { BuildProducts.ward }
}

/// Runs `ward ARGS` in `directory`, with `environment` added to its own (the agent it runs
/// inherits it); returns exit status and output.
@discardableResult
func ward(_ args: [String], in directory: String, environment: [String: String] = [:],
          start: ((Process) -> Void)? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    try BuildProducts.run(Paths.ward, args, in: directory, environment: environment, started: start)
}

/// Runs a program to completion; returns its status and its stdout and stderr together.
func runProgram(_ path: String, _ args: [String], in directory: String? = nil, environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
    if let environment { p.environment = environment }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

/// Starts `ward serve` (on the shipped policies unless told) in `dir`, with its socket at
/// `dir/s.sock`; returns once it listens.
func startServe(in dir: String, run: String, policies: String = Paths.repository + "/policies", extra: [String] = [],
                environment: [String: String] = [:]) throws -> Process {
    let serve = Process()
    serve.executableURL = URL(fileURLWithPath: Paths.ward)
    serve.arguments = ["serve", "--policies", policies, "--socket", dir + "/s.sock", "--run-id", run] + extra
    serve.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    serve.currentDirectoryURL = URL(fileURLWithPath: dir)
    let out = Pipe()
    serve.standardOutput = out
    try serve.run()
    // It prints the socket path once it listens; the drain goes on reading after that.
    try #require(OutputDrain(out.fileHandleForReading).wait(for: "\n"), "ward serve never listened")
    return serve
}

/// Asks `ward serve` in `dir`, armed with the fail point `failpoint`, for one `tool.call` and
/// waits for ward to die at it: the call is left as a crash of ward leaves it.
func callUntilWardDies(in dir: String, run: String, policies: String = Paths.repository + "/policies", failpoint: String,
                       _ params: JSONValue, environment: [String: String] = [:],
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
    let serve = try startServe(in: dir, run: run, policies: policies, environment: environment.merging(["WARD_FAILPOINTS": failpoint]) { $1 })
    let reply = try RawClient(dir + "/s.sock").call(1, "tool.call", params)
    serve.waitUntilExit()
    #expect(reply == nil && serve.terminationReason == .uncaughtSignal, "ward did not die at \(failpoint): \(String(describing: reply))",
            sourceLocation: sourceLocation)
}

/// Asks a fresh `ward serve` in `dir` for one `tool.call`; its response, once ward is stopped.
func callOnce(in dir: String, run: String, policies: String = Paths.repository + "/policies", _ params: JSONValue,
              environment: [String: String] = [:]) throws -> [String: JSONValue]? {
    let serve = try startServe(in: dir, run: run, policies: policies, environment: environment)
    defer {
        serve.terminate()
        serve.waitUntilExit()
    }
    return try RawClient(dir + "/s.sock").call(1, "tool.call", params)
}

/// Runs `ward ARGS` in `dir` under a pseudo-terminal (its stdin, stdout and stderr), and
/// for each step waits until the terminal shows `text`, then types `answer`; returns all
/// it showed and ward's exit status.
func wardOnTerminal(_ args: [String], in dir: String, _ steps: [(text: String, answer: String)]) throws -> (status: Int32?, shown: String) {
    let driver = """
        import json, os, pty, sys, time
        steps = json.loads(sys.argv[1])
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(sys.argv[2], sys.argv[2:])
        seen = b""
        def until(text, limit=60):
            global seen
            end = time.time() + limit
            while text not in seen:
                if time.time() > end:
                    sys.exit("timed out waiting for %r in %r" % (text, seen))
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    sys.exit("ended before %r: %r" % (text, seen))
                seen += chunk
        for text, answer in steps:
            until(text.encode())
            os.write(fd, answer.encode())
        end = time.time() + 60
        while time.time() < end:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if time.time() >= end:
            os.kill(pid, 9)  # it waits for an answer the test does not give
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(seen.decode(errors="replace"))
        print("\\nEXIT", os.waitstatus_to_exitcode(status))
        """
    let script = JSONValue.array(steps.map { .array([.string($0.text), .string($0.answer)]) }).canonical
    let r = try runProgram("/usr/bin/env", ["python3", "-c", driver, script, Paths.ward] + args, in: dir)
    let status = r.output.range(of: "\nEXIT ", options: .backwards).flatMap { Int32(r.output[$0.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)) }
    return (status, r.output)
}

let agentScript = """
import os, sys
sys.path.insert(0, sys.argv[1])
from ward_client import Ward, WardError
ward = Ward()
r = ward.resume()
state = (r["checkpoint"] or {}).get("state") or {"step": 0}
crash_at = int(os.environ.get("CRASH_AT", "-1"))
for step in range(state["step"], 6):
    try:
        res = ward.call("shell", {"command": f"echo {step} >> effects.log; " + os.environ.get("TOOL_EXTRA", "")}, call_id=f"s{step}", checkpoint={"step": step})
    except WardError as e:
        print("error", e.kind, flush=True)
        sys.exit(3)
    print(step, "replayed" if res["replayed"] else "ran", flush=True)
    if step == crash_at and r["attempt"] == 1:
        os._exit(9)
print("finished", flush=True)
"""

@Suite("ward run: crashes, restarts, resume", .serialized)
struct RunTests {
    func workdir() throws -> String {
        let dir = temporaryDirectory("run")
        try agentScript.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        return dir
    }

    @Test("an agent crashed at each step resumes with no duplicate effect", arguments: Array(0..<6))
    func crashAtStep(step: Int) throws {
        let dir = try workdir()
        let r = try ward(["run", "--policies", Paths.repository + "/policies", "--run-id", "crash", "--socket", dir + "/s.sock", "--", "python3", "agent.py", Paths.repository + "/python"],
                         in: dir, environment: ["CRASH_AT": "\(step)"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasSuffix("finished\n"), "\(r.stdout)")
        #expect(r.stdout.contains("\(step) replayed"), "\(r.stdout)")
        let effects = try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8)
        #expect(effects == "0\n1\n2\n3\n4\n5\n", "duplicate or missing effects: \(effects)")
        let runs = try ward(["runs", "list", "--json"], in: dir)
        let run = try JSONValue.parse(runs.stdout)
        guard case .array(let items) = run, let first = items.first?.objectValue else { Issue.record("no runs"); return }
        #expect(first["attempts"] == .number(2) && first["unfinished"] == .bool(false))
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func anUnprivilegedUserRunsAndResumesToo() throws {
        let dir = try workdir()
        try FileManager.default.copyItem(atPath: Paths.repository + "/policies", toPath: dir + "/policies")
        try FileManager.default.copyItem(atPath: Paths.repository + "/python/ward_client", toPath: dir + "/ward_client")
        for path in [dir] + ((FileManager.default.subpaths(atPath: dir) ?? []).map { dir + "/" + $0 }) { chown(path, 65534, 65534) }
        var env = ProcessInfo.processInfo.environment
        env["CRASH_AT"] = "2"
        let (status, text) = try runProgram("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Paths.ward, "run",
                                                                "--run-id", "nobody", "--socket", dir + "/s.sock", "--", "python3", "agent.py", dir], in: dir, environment: env)
        #expect(status == 0 && text.contains("2 replayed") && text.hasSuffix("finished\n"), "\(text)")
        #expect(try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8) == "0\n1\n2\n3\n4\n5\n")
    }

    /// ward is SIGKILLed at each fail point during step 2's call, then restarted: what the
    /// restart finds depends only on the window the kill hit, and nothing ever runs twice.
    @Test("a kill at each fail point", arguments: [
        ("after-begin@2", "in-doubt", ["0"]),
        ("after-spawn@2", "in-doubt", nil),
        ("in-checkpoint@2", "finished", ["0", "1", "2", "3", "4", "5"]),
        ("before-finish@2", "in-doubt", ["0", "1"]),
        ("after-finish@2", "finished", ["0", "1", "2", "3", "4", "5"]),
        ("before-reply@3", "finished", ["0", "1", "2", "3", "4", "5"]),
    ] as [(String, String, [String]?)])
    func failPoint(spec: String, expected: String, effects: [String]?) throws {
        let dir = try workdir()
        let point = String(spec.split(separator: "@")[0])
        let args = ["run", "--policies", Paths.repository + "/policies", "--run-id", "fp-\(point)", "--socket", dir + "/s.sock", "--max-restarts", "0", "--",
                    "python3", "agent.py", Paths.repository + "/python"]
        let crashed = try ward(args, in: dir, environment: ["WARD_FAILPOINTS": "\(point)=kill@\(spec.split(separator: "@")[1])"])
        #expect(crashed.status != 0, "ward was not killed at \(spec): \(crashed)")
        let resumed = try ward(args, in: dir)
        let log = (try? String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8)) ?? ""
        let lines = log.split(separator: "\n").map(String.init)
        #expect(Set(lines).count == lines.count, "an effect ran twice: \(lines)")
        if expected == "in-doubt" {
            #expect(resumed.stdout.contains("error in-doubt"), "\(spec): \(resumed.stdout) \(resumed.stderr)")
            let doubt = try ward(["ledger", "list", "--status", "in-doubt", "--json"], in: dir)
            #expect(doubt.stdout.contains("\"s1\""), "\(spec): \(doubt.stdout)")
            if effects == nil { #expect(lines == ["0"] || lines == ["0", "1"], "\(spec): \(lines)") }
        } else {
            #expect(resumed.status == 0 && resumed.stdout.hasSuffix("finished\n"), "\(spec): \(resumed.stdout) \(resumed.stderr)")
            #expect(!(try ward(["ledger", "list", "--json"], in: dir).stdout.contains("in-doubt")))
        }
        if let effects { #expect(lines == effects, "\(spec): \(lines)") }
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    /// The process that starts a tool (its policy's zygote) dies after it made the call's
    /// child: the tool may have begun. A non-idempotent call becomes in-doubt and nothing
    /// runs it again; an idempotent one is simply started again. `after-begin` stalls each
    /// call with its child parked at the gate; the zygote is stopped meanwhile, so the child
    /// execs when the gate opens but the zygote never replies, and it is then killed.
    /// The stall is the window in which the test stops the zygote; it waits for the parked
    /// child to exist before, and for it to exec after.
    @Test func aCallWhoseStartWasLostIsInDoubtUnlessRepeatingIsHarmless() throws {
        let dir = temporaryDirectory("lost")
        let serve = try startServe(in: dir, run: "lost", environment: ["WARD_FAILPOINTS": "after-begin=stall:1000"])
        defer { kill(serve.processIdentifier, SIGKILL); serve.waitUntilExit() }
        let c = try RawClient(dir + "/s.sock")
        var id = 0
        func call(_ callId: String, _ tool: String, _ arguments: [String: JSONValue], losingItsStart: Bool) -> [String: JSONValue]? {
            id += 1
            let params: JSONValue = .object(["callId": .string(callId), "tool": .string(tool), "arguments": .object(arguments)])
            guard losingItsStart else { return c.call(id, "tool.call", params) }
            // No call is in flight: every ward-zygote child of ward is a zygote.
            let zygotes = Processes.children(of: serve.processIdentifier, named: "ward-zygote", zombies: false)
            c.request(id, "tool.call", params)
            // The call's child, parked while its record is written (then ward stalls after
            // begin): the one ward-zygote child of ward that is not a zygote.
            var child: Int32?
            #expect(eventually {
                child = Processes.children(of: serve.processIdentifier, named: "ward-zygote", zombies: false).subtracting(zygotes).first
                return child != nil
            }, "no parked child appeared")
            for z in zygotes { kill(z, SIGSTOP) }
            // The gate opened after the stall: the tool exec'd (the child took its name); its
            // zygote, stopped, cannot reply.
            if let child { #expect(eventually { Processes.name(of: child) != "ward-zygote" }, "the parked child never exec'd") }
            for z in zygotes { kill(z, SIGKILL) }
            return c.next()
        }
        // A slow tool, so it is still running when its call is lost.
        let sleeper = "sleep 1.\(Int.random(in: 100_000...999_999))"
        let mail: [String: JSONValue] = ["command": .string("\(sleeper); echo sent >> sent.log")]
        #expect(call("warm", "shell", ["command": .string("true")], losingItsStart: false)?["result"] != nil)  // starts shell's zygote
        let lost = call("mail", "shell", mail, losingItsStart: true)
        #expect(kind(lost) == "in-doubt", "\(String(describing: lost))")
        #expect(kind(call("mail", "shell", mail, losingItsStart: false)) == "in-doubt")
        let doubt = try ward(["ledger", "list", "--status", "in-doubt", "--json"], in: dir)
        #expect(doubt.stdout.contains("\"mail\""), "\(doubt.stdout)")
        // Its answer came after the call's processes were killed: nothing is left to send.
        #expect(processes(containing: sleeper).isEmpty, "the tool ran on after its call ended")
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace/sent.log"), "the tool ran on after its call ended")

        let write: [String: JSONValue] = ["path": .string("w.txt"), "content": .string("hello")]
        #expect(call("warm-w", "write_file", ["path": .string("warm.txt"), "content": .string("")], losingItsStart: false)?["result"] != nil)
        let written = call("w", "write_file", write, losingItsStart: true)
        #expect(written?["result"]?.objectValue?["status"] == .string("succeeded"), "\(String(describing: written))")
        #expect(try String(contentsOfFile: dir + "/workspace/w.txt", encoding: .utf8) == "hello")
        // The ledger counts both starts: the lost one (which may have run the tool) and the
        // one that ran it again, each with its own call.begin.
        let shown = try JSONValue.parse(try ward(["ledger", "show", "lost", "w", "--json"], in: dir).stdout).objectValue
        #expect(shown?["executions"] == .number(2), "\(String(describing: shown))")
        let begins = shown?["events"]?.arrayValue?.filter { $0.objectValue?["kind"] == .string("call.begin") }
        #expect(begins?.compactMap { $0.objectValue?["data"]?.objectValue?["execution"] } == [.number(1), .number(2)], "\(String(describing: begins))")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func theDemoPublishesExactlyOnce() throws {
        let (status, text) = try runProgram("/usr/bin/python3", [Paths.repository + "/Scripts/demo_site.py", "demo", Paths.ward])
        #expect(status == 0, "\(text)")
        #expect(text.contains("published.log has 1 line") && text.contains("identical to an uninterrupted run"), "\(text)")
    }

    @Test func killingWardDuringANonIdempotentToolLeavesItInDoubtAndNoOrphans() throws {
        let dir = try workdir()
        let token = "41.\(Int.random(in: 100_000...999_999))"
        // The same command every time (the call's arguments must not change); it is slow
        // only while the workspace holds a marker.
        let extra = ["TOOL_EXTRA": "if [ -e slow ]; then sleep \(token); fi"]
        try FileManager.default.createDirectory(atPath: dir + "/workspace", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/workspace/slow", contents: nil)
        // The agent by its full path: this test's agent, not another run's on this machine.
        let agent = dir + "/agent.py"
        let args = ["run", "--policies", Paths.repository + "/policies", "--run-id", "killed", "--socket", dir + "/s.sock", "--max-restarts", "0", "--",
                    "python3", agent, Paths.repository + "/python"]
        let first = try ward(args, in: dir, environment: extra) { p in
            // Kill ward once the first tool is running: its sleeper exists.
            #expect(eventually { !processes(containing: token).isEmpty }, "the first tool never started")
            kill(p.processIdentifier, SIGKILL)
        }
        #expect(first.status != 0)
        // The agent died with ward (PDEATHSIG)…
        #expect(eventually { processes(containing: agent).isEmpty }, "the agent outlived ward")
        // …and so did everything the tool started (the watchdog killed its cgroup).
        #expect(eventually { processes(containing: token).isEmpty }, "the tool's sleeper outlived ward")
        try FileManager.default.removeItem(atPath: dir + "/workspace/slow")
        // Restarted with the same run ID: the call caught mid-flight is in doubt and refused.
        let second = try ward(args, in: dir, environment: extra)
        #expect(second.stdout.contains("error in-doubt"), "\(second.stdout) \(second.stderr)")
        // What ward knows of it, said once: where, for how long, and how far the tool got.
        for fact in ["in workspace \(dir)/workspace", "the tool ran at least", "it was still running when ward died", "has ended"] {
            #expect(second.stderr.contains(fact), "missing \"\(fact)\": \(second.stderr)")
        }
        #expect(processes(containing: token).isEmpty, "the tool's sleeper outlived the restart")
        let list = try ward(["ledger", "list", "--status", "in-doubt", "--json"], in: dir)
        #expect(list.stdout.contains("\"s0\""), "\(list.stdout)")
        // The operator checks and says it did not run: it runs once, and the agent finishes.
        #expect(try ward(["ledger", "resolve", "killed", "s0", "--as", "not-executed", "--note", "effect absent"], in: dir).status == 0)
        let third = try ward(args, in: dir, environment: extra)
        #expect(third.status == 0 && third.stdout.hasSuffix("finished\n"), "\(third.stdout) \(third.stderr)")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func sigtermStopsGracefullyAndRecordsKilledTools() throws {
        let dir = try workdir()
        let sleeper = "sleep 30.\(Int.random(in: 100_000...999_999))"
        let agent = dir + "/agent.py"
        let r = try ward(["run", "--policies", Paths.repository + "/policies", "--run-id", "term", "--socket", dir + "/s.sock", "--grace", "0.5", "--",
                          "python3", agent, Paths.repository + "/python"], in: dir, environment: ["TOOL_EXTRA": sleeper]) { p in
            // Stopped once the first tool is running: its sleeper exists.
            #expect(eventually { !processes(containing: sleeper).isEmpty }, "the first tool never started")
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(r.status == 128 + SIGTERM, "\(r)")
        let list = try ward(["ledger", "list", "--json"], in: dir)
        #expect(list.stdout.contains("\"status\":\"killed\""), "\(list.stdout)")
        #expect(!list.stdout.contains("\"status\":\"running\""))
        #expect(processes(containing: agent).isEmpty)
        #expect(processes(containing: sleeper).isEmpty)
    }
}

/// Live processes whose command line contains `token`.
func processes(containing token: String) -> [Int32] { Processes.withCommandLine(containing: token) }
