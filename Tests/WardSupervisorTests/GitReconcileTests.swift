import Foundation
import Testing
import WardCore
import WardLedger
import WardPolicy
import WardSandbox
import WardSupervisor
import WardTestSupport

/// Runs /usr/bin/git in `directory` (outside any sandbox: the test's own look at the
/// repository, which a root ward gives to the tool identity, hence `safe.directory`); its
/// stdout, or a failed expectation.
@discardableResult
func git(_ args: [String], in directory: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let r = try BuildProducts.run("/usr/bin/git", ["-c", "safe.directory=*"] + args, in: directory,
                                  environment: ["GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@ward.invalid",
                                                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@ward.invalid"])
    try #require(r.status == 0, "git \(args): \(r.stderr)", sourceLocation: sourceLocation)
    return r.stdout
}

/// A `tool.call` of the shipped `git` tool.
func gitCall(_ callId: String, _ args: [String]) -> JSONValue {
    .object(["callId": .string(callId), "tool": .string("git"), "arguments": .object(["args": .array(args.map { .string($0) })])])
}

/// The ledger status of each call of `run`, from `ward ledger list --json` in `dir`.
func ledgerStatuses(run: String, in dir: String) throws -> [String: String] {
    let list = try ward(["ledger", "list", "--run", run, "--json"], in: dir)
    try #require(list.status == 0, "\(list.stderr)")
    var statuses: [String: String] = [:]
    for call in try JSONValue.parse(list.stdout).arrayValue ?? [] {
        if let call = call.objectValue, let id = call["callId"]?.stringValue { statuses[id] = call["status"]?.stringValue }
    }
    return statuses
}

/// `ward ledger reconcile --json` in `dir`: its exit status and each call's finding (with
/// the reason of one left in doubt).
func reconcileFindings(in dir: String, environment: [String: String] = [:]) throws -> (status: Int32, findings: [String: String], reasons: [String: String]) {
    let r = try ward(["ledger", "reconcile", "--json"], in: dir, environment: environment)
    var findings: [String: String] = [:], reasons: [String: String] = [:]
    for item in (try? JSONValue.parse(r.stdout).arrayValue) ?? [] {
        guard let item = item.objectValue, let id = item["callId"]?.stringValue else { continue }
        findings[id] = item["finding"]?.stringValue
        reasons[id] = item["reason"]?.stringValue
    }
    return (r.status, findings, reasons)
}

/// The shipped `git` tool after ward died mid-call: its commits carry the call's idempotency
/// key in a `Ward-Idempotency-Key` trailer, and its reconcile command settles a commit by
/// looking for it, a read by letting it run again, and anything else not at all.
@Suite("git: a call caught in doubt settles by its commit's trailer", .serialized)
struct GitReconcileTests {
    /// A work directory whose workspace (or `workspace/subdirectory`) is a git repository
    /// with no commit and a.txt staged. Returns the directory and the repository.
    func repository(subdirectory: String? = nil) throws -> (dir: String, repo: String) {
        let dir = temporaryDirectory("git")
        let repo = dir + "/workspace" + (subdirectory.map { "/" + $0 } ?? "")
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        try git(["init", "-q"], in: repo)
        try "a\n".write(toFile: repo + "/a.txt", atomically: true, encoding: .utf8)
        try git(["add", "a.txt"], in: repo)
        return (dir, repo)
    }

    /// How many commits the repository holds (every ref and reflog).
    func commits(_ repo: String) throws -> Int {
        Int(try git(["rev-list", "--all", "--reflog", "--count"], in: repo).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// The Ward-Idempotency-Key trailers of every commit, newest first.
    func keys(_ repo: String) throws -> [String] {
        try git(["log", "--all", "--reflog", "--format=%(trailers:key=Ward-Idempotency-Key,valueonly)"], in: repo)
            .split(separator: "\n").map(String.init)
    }

    @Test func aCommitMadeBeforeWardDiedSettlesAsExecutedAndIsNeverMadeAgain() throws {
        let (dir, repo) = try repository()
        let call = gitCall("c1", ["commit", "-m", "add a.txt"])
        // The commit is made; ward dies before its outcome is recorded.
        try callUntilWardDies(in: dir, run: "g", failpoint: "before-finish=kill", call)
        #expect(try commits(repo) == 1)
        #expect(try keys(repo) == [Ledger.idempotencyKey(run: "g", callId: "c1")])
        #expect(try ledgerStatuses(run: "g", in: dir)["c1"] == "in-doubt")

        let r = try reconcileFindings(in: dir)
        #expect(r.status == 0 && r.findings == ["c1": "executed"], "\(r)")
        #expect(try ledgerStatuses(run: "g", in: dir)["c1"] == "resolved")
        // The recorded result names the commit: its hash and subject.
        let head = try git(["log", "-1", "--format=%H %s"], in: repo)
        let again = try #require(try callOnce(in: dir, run: "g", call)?["result"]?.objectValue)
        #expect(again["replayed"] == .bool(true) && again["status"] == .string("resolved"), "\(again)")
        #expect(again["stdout"] == .string(head), "\(again)")
        #expect(try commits(repo) == 1, "committed twice")
    }

    @Test func aCommitThatNeverRanSettlesAsNotExecutedAndRunsOnce() throws {
        // git's own options before the subcommand: the wrapper and the reconcile command
        // must both see past them to `commit`, and the reconcile look in the same repository.
        let (dir, repo) = try repository(subdirectory: "repo")
        let call = gitCall("c2", ["-C", "repo", "-c", "core.quotepath=off", "commit", "-m", "add a.txt"])
        // ward dies after recording the call and before starting the tool.
        try callUntilWardDies(in: dir, run: "g", failpoint: "after-begin=kill", call)
        #expect(try commits(repo) == 0)
        #expect(try ledgerStatuses(run: "g", in: dir)["c2"] == "in-doubt")

        let r = try reconcileFindings(in: dir)
        #expect(r.status == 0 && r.findings == ["c2": "not-executed"], "\(r)")
        #expect(try commits(repo) == 0, "the reconcile command committed")
        // Asked again, it commits, once, with the trailer; asked once more, it is replayed.
        let first = try #require(try callOnce(in: dir, run: "g", call)?["result"]?.objectValue)
        #expect(first["status"] == .string("succeeded") && first["replayed"] == .bool(false), "\(first)")
        let second = try #require(try callOnce(in: dir, run: "g", call)?["result"]?.objectValue)
        #expect(second["replayed"] == .bool(true), "\(second)")
        #expect(try commits(repo) == 1)
        #expect(try keys(repo) == [Ledger.idempotencyKey(run: "g", callId: "c2")])
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func aPushInDoubtStaysInDoubtForAnOperator() throws {
        let (dir, _) = try repository()
        let call = gitCall("p1", ["push", "origin", "main"])
        try callUntilWardDies(in: dir, run: "g", failpoint: "after-begin=kill", call)
        // The operator reads why in the table `ward ledger reconcile` prints.
        let r = try ward(["ledger", "reconcile"], in: dir)
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("still in doubt") && r.stdout.contains("cannot tell whether `git push` happened; settle it by hand with ward ledger resolve"),
                "\(r.stdout)")
        #expect(try ledgerStatuses(run: "g", in: dir)["p1"] == "in-doubt")
        // Asked again, ward reconciles, learns nothing, and refuses: the push never starts.
        let again = try callOnce(in: dir, run: "g", call)
        #expect(kind(again) == "in-doubt", "\(String(describing: again))")
        #expect(try ledgerStatuses(run: "g", in: dir)["p1"] == "in-doubt")
    }

    @Test func aReadInDoubtSettlesAsNotExecutedAndRunsAgain() throws {
        let (dir, _) = try repository()
        let call = gitCall("s1", ["--no-pager", "status", "--porcelain"])
        try callUntilWardDies(in: dir, run: "g", failpoint: "before-finish=kill", call)
        let r = try reconcileFindings(in: dir)
        #expect(r.status == 0 && r.findings == ["s1": "not-executed"], "\(r)")
        let again = try #require(try callOnce(in: dir, run: "g", call)?["result"]?.objectValue)
        #expect(again["status"] == .string("succeeded") && again["stdout"] == .string("A  a.txt\n"), "\(again)")
    }
}

/// The git tool's reconcile command on its own, in the shipped policy's sandbox: which
/// calls it can settle, and that a commit amended away since still counts as made.
@Suite("git: the reconcile command's answers")
struct GitReconcileCommandTests {
    static let workspace: String = {
        let dir = temporaryDirectory("git-ws")
        _ = try! git(["init", "-q"], in: dir)
        return dir
    }()
    static let sandbox = try! Sandbox(policies: PolicyLoader.load(directory: Paths.repository + "/policies"), workspace: workspace)

    /// Runs the git tool (or its reconcile command) as call `callId` of run `r`.
    static func run(_ callId: String, _ args: [String], reconcile: Bool = false) throws -> ToolOutcome {
        try sandbox.run(tool: "git", arguments: .object(["args": .array(args.map { .string($0) })]),
                        environment: Reconciler.environment(run: "r", callId: callId), reconcile: reconcile)
    }

    /// Each case: the call's args, and nil when the reconcile command must exit 3 (not
    /// executed), or the subcommand it must exit 1 about (cannot tell).
    @Test(arguments: [
        // Nothing was committed with this key: it may run.
        (["--git-dir=.git", "--work-tree", ".", "commit", "-m", "x"], nil),
        // Reads: running them again is harmless. `-C commit` is a directory, not the subcommand.
        (["-C", "commit", "log"], nil), (["diff", "--stat"], nil), (["--version"], nil), ([], nil),
        // Nothing records whether these happened; an alias could be anything.
        (["fetch"], "fetch"), (["reset", "--hard"], "reset"), (["-c", "alias.ci=commit", "ci", "-m", "x"], "ci"),
        (["commit-tree", "HEAD^{tree}"], "commit-tree"),
    ] as [([String], String?)])
    func answers(_ args: [String], _ undecided: String?) throws {
        let o = try GitReconcileCommandTests.run("c", args, reconcile: true)
        let stderr = String(decoding: o.stderr, as: UTF8.self)
        #expect(o.exitCode == (undecided == nil ? 3 : 1), "\(args): \(stderr)")
        if let undecided {
            #expect(stderr == "git: cannot tell whether `git \(undecided)` happened; settle it by hand with ward ledger resolve\n")
        }
    }

    @Test func anAmendedCommitStillCountsAsMade() throws {
        func run(_ callId: String, _ args: [String], reconcile: Bool = false) throws -> ToolOutcome {
            try GitReconcileCommandTests.run(callId, ["-C", "amended"] + args, reconcile: reconcile)
        }
        let repo = GitReconcileCommandTests.workspace + "/amended"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: false)
        try git(["init", "-q"], in: repo)
        try "a\n".write(toFile: repo + "/a.txt", atomically: true, encoding: .utf8)
        try git(["add", "a.txt"], in: repo)
        // Made by the operator after ward started: the tool identity's only when given.
        if geteuid() == 0 {
            let identity = try ToolIdentity.resolve(nil)
            try #require(try BuildProducts.run("/bin/chown", ["-R", "\(identity.uid):\(identity.gid)", repo]).status == 0)
        }
        let made = try run("c1", ["commit", "-m", "first", "--", "a.txt"])
        try #require(made.exitCode == 0, "\(String(decoding: made.stderr, as: UTF8.self))")
        let original = try git(["rev-parse", "HEAD"], in: repo).trimmingCharacters(in: .newlines)
        // Another call rewrites it: c1's trailer is in no branch's history any more.
        try #require(try run("c2", ["commit", "--amend", "-m", "reworded"]).exitCode == 0)
        let history = try git(["log", "--format=%(trailers:key=Ward-Idempotency-Key,valueonly)"], in: repo)
        #expect(history.trimmingCharacters(in: .newlines) == Ledger.idempotencyKey(run: "r", callId: "c2"), "\(history)")
        // HEAD's reflog still holds it: c1 happened.
        let found = try run("c1", ["commit", "-m", "first", "--", "a.txt"], reconcile: true)
        #expect(found.exitCode == 0 && String(decoding: found.stdout, as: UTF8.self) == original + " first\n",
                "\(String(decoding: found.stdout, as: UTF8.self))\(String(decoding: found.stderr, as: UTF8.self))")
        #expect(try run("c2", ["commit", "--amend", "-m", "reworded"], reconcile: true).exitCode == 0)
        #expect(try run("c3", ["commit", "-m", "never made"], reconcile: true).exitCode == 3)
    }
}
