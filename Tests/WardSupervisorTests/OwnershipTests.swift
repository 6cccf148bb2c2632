import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// A running call's owner is judged by the kernel (its lock), never by /proc: no process
/// in another PID namespace, or unable to read the boot ID, declares a live owner dead; a
/// run has one supervisor; an outcome is recorded only by the execution that still owns
/// its call.
@Suite("Ownership: owner locks, run locks, fencing", .serialized, .enabled(if: geteuid() == 0, "namespaces and bind mounts need root"))
struct OwnershipTests {
    func policies() throws -> String {
        try testPolicies("ownership-policies", tools: #"""
        # Runs until the test removes the workspace's `hold` file, then counts its runs.
        [tools.send]
        command = ["/bin/sh", "-c", "echo started >> runs.log; while [ -e hold ]; do sleep 0.01; done; echo sent"]
        """#)
    }

    /// `ward ARGS` in new PID and mount namespaces, with their own /proc (where ward's pid
    /// means nothing), optionally with the boot ID unreadable.
    func wardElsewhere(_ args: [String], in dir: String, bootIDHidden: Bool = false) throws -> (status: Int32, output: String) {
        let hide = bootIDHidden ? "mount --bind /dev/null /proc/sys/kernel/random/boot_id && " : ""
        let command = hide + "exec " + ([Paths.ward] + args).map(Shell.quote).joined(separator: " ")
        return try runProgram("/usr/bin/unshare", ["--pid", "--mount", "--fork", "--mount-proc", "/bin/sh", "-c", command], in: dir)
    }

    @Test func aLiveOwnerIsNeverJudgedDeadFromAnotherPIDNamespace() throws {
        let dir = temporaryDirectory("owner-live")
        try FileManager.default.createDirectory(atPath: dir + "/workspace", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/workspace/hold", contents: nil)
        let serve = try startServe(in: dir, run: "own", policies: try policies())
        defer { kill(serve.processIdentifier, SIGTERM); serve.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        client.request(1, "tool.call", .object(["callId": .string("pay"), "tool": .string("send"), "arguments": .object([:])]))
        #expect(eventually { (try? String(contentsOfFile: dir + "/workspace/runs.log", encoding: .utf8)) == "started\n" }, "the tool never started")

        // From other namespaces, with and without the boot ID: audits, a failing resolve, a
        // reconcile. None may take the live call for dead.
        for hidden in [false, true] {
            let list = try wardElsewhere(["ledger", "list", "--json"], in: dir, bootIDHidden: hidden)
            #expect(list.output.contains("\"status\":\"running\""), "\(list.output)")
            let resolve = try wardElsewhere(["ledger", "resolve", "own", "no-such-call", "--as", "executed", "--note", "x"], in: dir, bootIDHidden: hidden)
            #expect(resolve.status != 0 && resolve.output.contains("no call no-such-call"), "\(resolve.output)")
            let reconcile = try wardElsewhere(["ledger", "reconcile"], in: dir, bootIDHidden: hidden)
            #expect(reconcile.status == 0, "\(reconcile.output)")
            let show = try wardElsewhere(["ledger", "show", "own", "pay", "--json"], in: dir, bootIDHidden: hidden)
            #expect(show.output.contains("\"status\":\"running\""), "\(show.output)")
        }
        #expect(try ward(["ledger", "list", "--status", "in-doubt", "--json"], in: dir).stdout == "[]\n")
        // Asked again meanwhile (by an agent that reconnected): waited for, never run twice.
        let again = try RawClient(dir + "/s.sock")
        try FileManager.default.removeItem(atPath: dir + "/workspace/hold")
        let first = client.next()?["result"]?.objectValue
        let second = again.call(2, "tool.call", .object(["callId": .string("pay"), "tool": .string("send"), "arguments": .object([:])]))?["result"]?.objectValue
        #expect(first?["stdout"] == .string("sent\n") && second?["stdout"] == .string("sent\n"), "\(String(describing: first)) \(String(describing: second))")
        #expect(try String(contentsOfFile: dir + "/workspace/runs.log", encoding: .utf8) == "started\n", "the call ran twice")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func aSecondSupervisorOfARunIsRefusedAndRecordsNothing() throws {
        let dir = temporaryDirectory("owner-run")
        let policies = try policies()
        let first = try startServe(in: dir, run: "one", policies: policies)
        defer { kill(first.processIdentifier, SIGTERM); first.waitUntilExit() }
        let before = try ward(["ledger", "export", "--run", "one"], in: dir).stdout
        // Another socket, another PID namespace: still the same run, refused.
        let second = try wardElsewhere(["serve", "--policies", policies, "--run-id", "one", "--socket", dir + "/other.sock"], in: dir)
        #expect(second.status == 1 && second.output.contains("run one is served by another supervisor"), "\(second.output)")
        #expect(try ward(["ledger", "export", "--run", "one"], in: dir).stdout == before, "the refused start recorded something")
        // A supervisor stopped (SIGSTOP) still holds its run: no one takes it meanwhile.
        kill(first.processIdentifier, SIGSTOP)
        let third = try ward(["serve", "--policies", policies, "--run-id", "one", "--socket", dir + "/third.sock"], in: dir)
        kill(first.processIdentifier, SIGCONT)
        #expect(third.status == 1 && third.stderr.contains("served by another supervisor"), "\(third.stderr)")
        #expect(try ward(["ledger", "export", "--run", "one"], in: dir).stdout == before)
    }
}

@Suite("Ownership: cgroup pools", .serialized, .enabled(if: geteuid() == 0 && access("/sys/fs/cgroup", W_OK) == 0, "cgroup pools need root and cgroups"))
struct CgroupPoolOwnershipTests {
    /// A tool that prints its cgroup (one line per hierarchy).
    func policies() throws -> String {
        try testPolicies("pool-policies", tools: #"""
        [tools.where]
        command = ["/bin/cat", "/proc/self/cgroup"]
        read = ["/proc"]
        effect = "idempotent"
        """#)
    }

    /// The pool directories a call ran in: the parents of its call cgroups, one per
    /// hierarchy ("N:CONTROLLERS:/ward-…/call-…" in /proc/self/cgroup).
    func pools(_ cgroupLines: String) -> [String] {
        cgroupLines.split(separator: "\n").compactMap { line -> String? in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[2].contains("/ward-") else { return nil }
            let unified = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/unified") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup"
            let mount = parts[1].isEmpty ? unified : "/sys/fs/cgroup/" + parts[1]
            return mount + String(parts[2][..<parts[2].lastIndex(of: "/")!])
        }
    }

    /// Seconds since a directory was made (changed); nil when it is gone.
    func age(_ path: String) -> Int? {
        var st = stat(), now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return stat(path, &st) == 0 ? now.tv_sec - st.st_ctim.tv_sec : nil
    }

    func callWhere(_ client: RawClient, _ id: Int) -> String? {
        client.call(id, "tool.call", .object(["callId": .string("w\(id)"), "tool": .string("where"), "arguments": .object([:])]))?["result"]?.objectValue?["stdout"]?.stringValue
    }

    @Test func aLivePoolSurvivesAWardInAnotherPIDNamespaceAndADeadOneIsSwept() throws {
        let dir = temporaryDirectory("pool-live")
        let policies = try policies()
        let live = try startServe(in: dir, run: "live", policies: policies)
        defer { kill(live.processIdentifier, SIGTERM); live.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        let first = try #require(callWhere(client, 1))
        let livePools = pools(first)
        try #require(!livePools.isEmpty, "no pool in \(first)")
        // Old enough to be swept if it looked abandoned.
        #expect(eventually { livePools.allSatisfy { age($0).map { $0 > 2 } == true } })

        // A ward that dies by SIGKILL leaves its pool behind.
        let deadDir = temporaryDirectory("pool-dead")
        let dead = try startServe(in: deadDir, run: "dead", policies: policies)
        let deadPools = pools(try #require(callWhere(try RawClient(deadDir + "/s.sock"), 1)))
        kill(dead.processIdentifier, SIGKILL)
        dead.waitUntilExit()
        // Old enough to be swept (or swept already: any ward that starts may do it, another
        // test's or the one below).
        #expect(eventually { deadPools.allSatisfy { age($0).map { $0 > 2 } ?? true } })

        // A pool named the old way (by pid), of a live process: its pid is free in another
        // PID namespace, which must not take that for death.
        let root = String(livePools[0][..<livePools[0].lastIndex(of: "/")!])
        let legacy = root + "/ward-\(getpid())-999"
        #expect(mkdir(legacy, 0o755) == 0, "cannot make \(legacy)")
        defer { rmdir(legacy) }

        // Another ward, in its own PID namespace (where neither pid exists), makes its pool.
        let other = try runProgram("/usr/bin/unshare", ["--pid", "--fork", "--mount-proc", Paths.ward, "sandbox", "--policies", policies,
                                                        "--workspace", temporaryDirectory("pool-ws"), "where"])
        #expect(other.status == 0, "\(other.output)")
        for p in livePools { #expect(FileManager.default.fileExists(atPath: p), "a live ward's pool \(p) was swept") }
        for p in deadPools { #expect(!FileManager.default.fileExists(atPath: p), "an abandoned pool \(p) was left") }
        #expect(FileManager.default.fileExists(atPath: legacy), "a live process's pool was swept by pid from another namespace")
        // The live ward's calls still run in their cgroups.
        #expect(callWhere(client, 2).map(pools) == livePools)
    }
}

@Suite("Ownership: fencing in the ledger")
struct FencingTests {
    @Test func anExecutionWhoseCallWasTakenRecordsNothing() throws {
        let path = temporaryDirectory("fence") + "/l.sqlite"
        let ledger = try Ledger(path: path)
        let request = BeginRequest(run: "r", callId: "c", tool: "t", effect: .nonIdempotent, arguments: .object([:]),
                                   policyHash: "p", executable: "/bin/true", attempt: 1)
        guard case .execute(let ticket) = try ledger.begin(request) else { Issue.record("not executed"); return }
        // Another process decided about the call meanwhile (here: in doubt, then a verdict;
        // as a process that judged this owner dead would): written straight to the file.
        let edit = try runProgram("/usr/bin/python3", ["-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            db.execute("UPDATE calls SET status = 'resolved', verdict = 'not-executed', owner = NULL WHERE call_id = 'c'")
            db.commit()
            """, path])
        #expect(edit.status == 0, "\(edit.output)")
        let outcome = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array("late".utf8), stderr: [], truncated: false, durationMs: 1)
        do {
            _ = try ledger.finish(ticket, outcome: outcome, retryFor: 0)
            Issue.record("a fenced finish was recorded")
        } catch {
            #expect(error.code == .fenced, "\(error)")
        }
        let shown = try ledger.showCall(run: "r", callId: "c").objectValue
        #expect(shown?["status"] == .string("resolved") && shown?["verdict"] == .string("not-executed"), "\(String(describing: shown))")
    }
}
