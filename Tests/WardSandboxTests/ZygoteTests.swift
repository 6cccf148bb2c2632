import Foundation
import Testing
import WardCore
@testable import WardSandbox
import WardTestSupport
import Synchronization

@Suite("Zygote: calls share a pre-confined process without sharing a fate", .serialized)
struct ZygoteTests {
    static let workspace = Fixture.workspace()
    static let sandbox = try! Fixture.sandbox(workspace: workspace)

    func shell(_ command: String) throws -> ToolOutcome {
        try ZygoteTests.sandbox.run(tool: "shell", arguments: .object(["command": .string(command)]))
    }

    /// This suite's zygotes (other suites' sandboxes come and go concurrently).
    static func zygotes() -> [Int32] { sandbox.zygoteProcessIDs() }

    /// The child of a parked call: the one process in the call's cgroup once it has joined
    /// it, which it does before its gate. (This process's children in general include other
    /// suites' calls and, as a subreaper, other suites' orphans: see `Processes`.)
    static func child(of call: SandboxCall) throws -> Int32 {
        var members: [Int32] = []
        try #require(eventually { members = call.processIDs; return !members.isEmpty }, "the parked call's child never joined its cgroup")
        try #require(members.count == 1, "\(members)")
        return members[0]
    }

    /// The OOM killer takes tools, never ward: each tool gets oom_score_adj 1000, written by
    /// its own vfork child, while ward and the zygote (which share ward's memory, so a
    /// score written there would be ward's too) keep theirs. Through the zygote and direct.
    @Test func toolsAreTheOOMKillersChoiceNotWard() throws {
        func score(_ pid: String) -> String? { try? String(contentsOfFile: "/proc/\(pid)/oom_score_adj", encoding: .utf8) }
        let mine = try #require(score("self"))
        #expect(mine != "1000\n", "this process starts at the tools' score: the test could not tell them apart")
        let direct = try Fixture.sandbox(workspace: ZygoteTests.workspace, useZygotes: false)
        for sandbox in [ZygoteTests.sandbox, direct] {
            let token = "38.\(Int.random(in: 100_000...999_999))"
            let done = DispatchSemaphore(value: 0)
            Thread {
                _ = try? sandbox.run(tool: "shell", arguments: .object(["command": .string("exec ./ward-hostile sleep 2 \(token)")]))
                done.signal()
            }.start()
            var tool: Int32?
            #expect(eventually { tool = Fixture.processes(containing: token).first { Processes.name(of: $0) == "ward-hostile" }; return tool != nil })
            #expect(score("\(try #require(tool))") == "1000\n")
            for z in sandbox.zygoteProcessIDs() { #expect(score("\(z)") == mine, "zygote \(z)") }
            #expect(done.wait(timeout: .now() + 20) == .success)
            #expect(score("self") == mine, "ward's own score changed")
        }
        #expect(!ZygoteTests.sandbox.zygoteProcessIDs().isEmpty, "no zygote took the call")
    }

    @Test func toolsCannotSignalTheZygoteOrEachOther() throws {
        _ = try shell("true")  // start the zygote
        let zygotes = ZygoteTests.zygotes()
        #expect(!zygotes.isEmpty, "no zygote found")
        for z in zygotes {
            let r = try shell("exec ./ward-hostile kill-term \(z)")
            #expect(r.out == "kill-term: EPERM\n", "\(r.out)\(r.err)")
        }
        // A concurrent call of the same tool is out of reach too.
        let token = "34.\(Int.random(in: 100_000...999_999))"
        let slept = Mutex<ToolOutcome?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let outcome = try? self.shell("exec ./ward-hostile sleep 3 \(token)")
            slept.withLock { $0 = outcome }
            done.signal()
        }.start()
        var victim: Int32?
        #expect(eventually { victim = Fixture.processes(containing: "ward-hostile sleep 3 \(token)").first; return victim != nil })
        let target = try #require(victim)
        let r = try shell("exec ./ward-hostile kill-term \(target)")
        #expect(r.out == "kill-term: EPERM\n", "\(r.out)\(r.err)")
        #expect(kill(target, 0) == 0, "the other call's tool was killed")
        // The sleeper's call ends here, not during the next test, and it was not disturbed.
        #expect(done.wait(timeout: .now() + 20) == .success)
        let outcome = slept.withLock { $0 }
        #expect(outcome?.status == .succeeded, "\(String(describing: outcome))")
    }

    @Test func aKilledZygoteIsReplaced() throws {
        _ = try shell("true")
        for z in ZygoteTests.zygotes() { kill(z, SIGKILL) }
        for i in 0..<3 {
            let r = try shell("echo after-\(i)")
            #expect(r.status == .succeeded && r.out == "after-\(i)\n", "\(r)")
        }
        #expect(!ZygoteTests.zygotes().isEmpty, "no new zygote was started")
    }

    /// A zygote that died before it read a call's request started nothing: the call is
    /// started directly, once. (It is stopped here, so it never reads the request, and
    /// killed while the call waits for its reply.)
    @Test func aZygoteDeadBeforeTakingACallLeavesItToADirectSpawn() throws {
        _ = try shell("true")  // start the zygote
        let zygotes = ZygoteTests.zygotes()
        try #require(!zygotes.isEmpty)
        let log = "untaken-\(Int.random(in: 100_000...999_999)).log"
        for z in zygotes { kill(z, SIGSTOP) }
        let outcome = Mutex<Result<ToolOutcome, any Error>?>(nil)
        let thread = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            thread.withLock { $0 = Processes.currentThread() }
            let result = Result { try self.shell("echo ran >> \(log)") }
            outcome.withLock { $0 = result }
            done.signal()
        }.start()
        // The request is in the zygote's pipe once the call's thread waits for the reply:
        // poll(2) on two fds (reply pipe and zygote pidfd) without a timeout. (The zygote's
        // liveness check before the request polls one fd with none.)
        #expect(eventually {
            guard let t = thread.withLock({ $0 }), let poll = Processes.blockedInPoll(t) else { return false }
            return poll.fds == 2 && poll.timeout == -1
        }, "the call never waited for the zygote's reply")
        for z in zygotes { kill(z, SIGKILL) }
        #expect(done.wait(timeout: .now() + 10) == .success, "the call hung after its zygote died")
        let status = outcome.withLock { (try? $0?.get())?.status }
        #expect(status == .succeeded, "\(String(describing: outcome.withLock { $0 }))")
        #expect(try String(contentsOfFile: ZygoteTests.workspace + "/" + log, encoding: .utf8) == "ran\n")
    }

    /// A zygote that dies after it took a call may have started the tool (the call's child
    /// is ward's, so it outlives the zygote): the call is not started again, which could
    /// run it twice, and what did start is killed. Here the zygote
    /// is stopped while its child waits at the gate, so the child execs and the zygote
    /// never replies; it is killed while the call waits for that reply.
    @Test func aZygoteLostAfterTakingACallDoesNotStartItAgain() throws {
        _ = try shell("true")  // start the zygote
        let token = Int.random(in: 100_000...999_999)
        let log = "lost-\(token).log"
        // The tool sleeps, so it is still running when its call is lost.
        let call = try ZygoteTests.sandbox.prepareCall(tool: "shell", arguments: .object(["command": .string("sleep 1.\(token); echo ran >> \(log)")]))
        let zygotes = ZygoteTests.zygotes()
        try #require(call.park())
        // Its child exists (a child of this process, named after the zygote until it execs).
        let child = try ZygoteTests.child(of: call)
        for z in zygotes { kill(z, SIGSTOP) }
        let failure = Mutex<SandboxError?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            do { _ = try call.run() } catch let error as SandboxError { failure.withLock { $0 = error } } catch {}
            done.signal()
        }.start()
        // The gate opened and the tool exec'd (the child took the tool's name); its zygote,
        // stopped, cannot reply.
        #expect(eventually { Processes.name(of: child) != "ward-zygote" }, "the parked child never exec'd")
        for z in zygotes { kill(z, SIGKILL) }
        #expect(done.wait(timeout: .now() + 10) == .success, "the call hung after its zygote died")
        #expect(failure.withLock { $0?.code } == .startUnknown, "\(String(describing: failure.withLock { $0 }))")
        // The lost call killed what started before it returned: nothing is left to write the log.
        #expect(!Processes.isUnreapedChild(child), "the started tool's process \(child) is alive or unreaped")
        #expect(Fixture.processes(containing: "sleep 1.\(token)").isEmpty, "the started tool outlived its call")
        #expect(!FileManager.default.fileExists(atPath: ZygoteTests.workspace + "/" + log), "the started tool ran on")
        #expect(try shell("echo next").out == "next\n", "no new zygote")
    }

    @Test func concurrentCallsGetTheirOwnResults() throws {
        let results = Mutex<[Int: String]>([:])
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            let r = try? self.shell("printf \(i); exit \(i % 7)")
            results.withLock { $0[i] = r.map { "\($0.out)|\($0.exitCode ?? -1)" } ?? "error" }
        }
        let all = results.withLock { $0 }
        for i in 0..<64 { #expect(all[i] == "\(i)|\(i % 7)", "call \(i): \(all[i] ?? "missing")") }
    }

    /// The supervisor parks a call's child while its `running` record is fsynced: the child
    /// is made and confined, but the tool runs only when the gate opens, and never after a
    /// cancel. Each call appends to a file, so a run that should not happen is seen.
    @Test func aParkedCallRunsOnlyWhenItsGateOpens() throws {
        _ = try shell("true")  // start the zygote
        let log = "parked-\(Int.random(in: 100_000...999_999)).log"
        let path = ZygoteTests.workspace + "/" + log
        func call(_ tag: String) throws -> SandboxCall {
            try ZygoteTests.sandbox.prepareCall(tool: "shell", arguments: .object(["command": .string("echo \(tag) >> \(log)")]))
        }
        func lines() -> [String] {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        let cancelled = try call("cancelled")
        #expect(cancelled.park(), "the zygote was free: the call should park")
        // Its child exists and is confined, but the tool has not run.
        let child = try ZygoteTests.child(of: cancelled)
        #expect(Processes.name(of: child) == "ward-zygote", "the parked child exec'd")
        let second = try call("second")
        #expect(!second.park(), "a parked call holds the zygote: a second call must not park")
        usleep(100_000)  // time in which a parked tool must not run (nothing to wait for)
        #expect(lines().isEmpty, "a parked tool ran before its gate opened: \(lines())")
        cancelled.cancel()
        // cancel waited for the child to give up at its gate and reaped it: it is no child
        // of this process any more, not even a zombie.
        #expect(!Processes.isUnreapedChild(child), "the cancelled call's child \(child) was not reaped")

        let ran = try call("ran")
        #expect(ran.park())
        usleep(50_000)  // again, time in which the parked tool must not run
        #expect(lines().isEmpty)
        let outcome = try ran.run()
        #expect(outcome.status == .succeeded, "\(outcome)")
        #expect(try second.run().status == .succeeded)
        #expect(lines() == ["ran", "second"])
    }
}
