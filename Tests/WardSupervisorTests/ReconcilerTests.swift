import Foundation
import Testing
import WardCore
import WardLedger
import WardPolicy
import WardSandbox
import WardSupervisor
import WardTestSupport

func temporaryDirectory(_ label: String) -> String { makeTemporaryDirectory("ward-supervisor-test-\(label)") }

/// A policy directory whose tools (TOML `tools`) run with a small shared sandbox: the
/// system's programs and libraries, the workspace writable, no network.
func testPolicies(_ label: String, tools: String) throws -> String {
    let dir = temporaryDirectory(label)
    try FileManager.default.copyItem(atPath: Paths.repository + "/policies/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
    try (#"""
    [defaults]
    syscalls = ["@system-service"]
    read = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache", "{workspace}"]
    write = ["{workspace}", "/dev/null"]
    env = ["PATH=/usr/bin:/bin"]

    """# + tools).write(toFile: dir + "/t.toml", atomically: true, encoding: .utf8)
    return dir
}

/// Policies with a non-idempotent `publish` whose effect is a line in the workspace's
/// published.log, and whose reconcile command looks for that line.
func reconcilePolicies() throws -> String {
    try testPolicies("policies", tools: #"""
    [tools.publish]
    command = ["/bin/sh", "-c", "echo \"$WARD_IDEMPOTENCY_KEY $1\" >> published.log; echo published $1", "sh", "{page}"]
    reconcile = ["/bin/sh", "-c", "[ \"$WARD_RECONCILE\" = 1 ] || exit 9; if grep -q \"^$WARD_IDEMPOTENCY_KEY \" published.log 2>/dev/null; then echo already published $1; exit 0; fi; exit 3", "sh", "{page}"]

    [tools.unsure]
    command = ["/bin/true"]
    reconcile = ["/bin/sh", "-c", "exit 1"]

    [tools.plain]
    command = ["/bin/true"]
    """#)
}

@Suite("Reconcile: a tool's own command settles in-doubt calls")
struct ReconcilerTests {
    func setUp() throws -> (Ledger, Sandbox, String) {
        let ws = temporaryDirectory("ws")
        let ledgerPath = temporaryDirectory("ledger") + "/l.sqlite"
        let sandbox = try Sandbox(policies: try PolicyLoader.load(directory: try reconcilePolicies()), workspace: ws)
        return (try Ledger(path: ledgerPath), sandbox, ws)
    }

    /// A supervisor that crashed between `begin` and `finish` of `call`.
    func crash(_ ledger: Ledger, tool: String, call: String, page: String = "index") throws {
        try beginThenCrash(ledgerAt: ledger.path, BeginRequest(
            run: "r", callId: call, tool: tool, effect: .nonIdempotent, arguments: .object(["page": .string(page)]),
            policyHash: "p", executable: "/bin/sh", attempt: 1))
    }

    @Test func effectFoundMeansExecuted() throws {
        let (ledger, sandbox, ws) = try setUp()
        try crash(ledger, tool: "publish", call: "pub-1")
        // The effect landed before the crash.
        try "\(Ledger.idempotencyKey(run: "r", callId: "pub-1")) index\n".write(toFile: ws + "/published.log", atomically: true, encoding: .utf8)
        let findings = try Reconciler(ledger: ledger, sandbox: sandbox).reconcileAll()
        #expect(findings.map(\.1) == [.executed])
        let replay = try ledger.begin(BeginRequest(run: "r", callId: "pub-1", tool: "publish", effect: .nonIdempotent,
                                                   arguments: .object(["page": .string("index")]), policyHash: "p", executable: "/bin/sh", attempt: 2))
        guard case .replay(let r) = replay else { Issue.record("not replayed"); return }
        #expect(r.outcome.status == .resolved && String(decoding: r.outcome.stdout, as: UTF8.self) == "already published index\n")
    }

    @Test func effectMissingMeansNotExecutedAndItRunsOnce() throws {
        let (ledger, sandbox, ws) = try setUp()
        try crash(ledger, tool: "publish", call: "pub-2")
        #expect(try Reconciler(ledger: ledger, sandbox: sandbox).reconcileAll().map(\.1) == [.notExecuted])
        let request = BeginRequest(run: "r", callId: "pub-2", tool: "publish", effect: .nonIdempotent,
                                   arguments: .object(["page": .string("index")]), policyHash: "p", executable: "/bin/sh", attempt: 2)
        guard case .execute(let ticket) = try ledger.begin(request) else { Issue.record("did not run"); return }
        let outcome = try sandbox.run(tool: "publish", arguments: request.arguments, environment: Reconciler.environment(run: "r", callId: "pub-2"))
        _ = try ledger.finish(ticket, outcome: outcome)
        guard case .replay = try ledger.begin(request) else { Issue.record("ran twice"); return }
        let log = try String(contentsOfFile: ws + "/published.log", encoding: .utf8)
        #expect(log.split(separator: "\n").count == 1)
    }

    @Test func anythingElseLeavesItInDoubt() throws {
        let (ledger, sandbox, _) = try setUp()
        try crash(ledger, tool: "unsure", call: "u1")
        try crash(ledger, tool: "plain", call: "p1")
        let findings = try Reconciler(ledger: ledger, sandbox: sandbox).reconcileAll()
        #expect(findings.count == 2)
        for (_, finding) in findings {
            guard case .undecided = finding else { Issue.record("decided: \(finding)"); continue }
        }
        #expect(try ledger.inDoubtCalls().count == 2)
    }

    @Test func twoReconcilesOfOneCallRunItsCommandOnce() throws {
        let ws = temporaryDirectory("ws")
        let policies = try testPolicies("policies", tools: #"""
            [tools.check]
            command = ["/bin/true"]
            reconcile = ["/bin/sh", "-c", "echo x >> reconciled.log; while [ -e hold ]; do sleep 0.01; done; echo found"]
            """#)
        let sandbox = try Sandbox(policies: try PolicyLoader.load(directory: policies), workspace: ws)
        let ledger = try Ledger(path: temporaryDirectory("ledger") + "/l.sqlite")
        try crash(ledger, tool: "check", call: "c1")
        let call = try #require(try ledger.inDoubtCalls().first)
        _ = FileManager.default.createFile(atPath: ws + "/hold", contents: nil)
        let findings = Lock<[Reconciler.Finding]>([]), second = Lock<String?>(nil)
        let reconciler = Reconciler(ledger: ledger, sandbox: sandbox)
        let first = Thread { if let f = try? reconciler.reconcile(call) { findings.withLock { $0.append(f) } } }
        first.start()
        #expect(eventually { (try? String(contentsOfFile: ws + "/reconciled.log", encoding: .utf8)) == "x\n" }, "the first reconcile never ran")
        let other = Thread {
            second.withLock { $0 = Processes.currentThread() }
            if let f = try? reconciler.reconcile(call) { findings.withLock { $0.append(f) } }
        }
        other.start()
        // The second waits for the first's lock (flock is syscall 73 on x86_64)…
        #expect(eventually { second.withLock { $0 }.flatMap(Processes.blockedSyscall)?.first == 73 }, "the second reconcile did not wait")
        try FileManager.default.removeItem(atPath: ws + "/hold")
        // …then finds the call settled: one run of the command, the same verdict for both.
        #expect(eventually { findings.withLock { $0.count } == 2 }, "a reconcile failed: \(findings.withLock { $0 })")
        #expect(findings.withLock { $0 } == [.executed, .executed])
        #expect(try String(contentsOfFile: ws + "/reconciled.log", encoding: .utf8) == "x\n", "the reconcile command ran twice")
    }
}
