import CWardOS
import CWardSpawn
import Foundation
import Testing
import WardCore
import WardSandbox

@Suite("Spawn: a child whose supervisor is gone does not start")
struct SpawnTests {
    /// ward can die after it made a call's child and before the child asked for
    /// PR_SET_PDEATHSIG: no signal comes then, and the child, reparented, would go on with a
    /// copy of ward's fds (a parked one waited at its gate forever, holding ward's stdout and
    /// the watchdog's pipe open). After the prctl the child compares its parent with the pid
    /// ward gave it. Here it is given another pid, as if ward had died before the prctl.
    @Test("the child checks its parent after asking for the death signal", arguments: [true, false])
    func theChildChecksItsParent(parentIsWard: Bool) throws {
        let path = strdup("/bin/true")!
        defer { free(path) }
        var argv: [UnsafeMutablePointer<CChar>?] = [path, nil]
        var envp: [UnsafeMutablePointer<CChar>?] = [nil]
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1]
        let input = ward_memfd("ward-args")
        try #require(input >= 0 && ward_pipe_cloexec(&out) == 0 && ward_pipe_cloexec(&err) == 0)
        defer { for fd in [input] + out + err { close(fd) } }
        var config = ward_spawn_config()
        config.path = UnsafePointer(path)
        config.stdin_fd = input
        config.stdout_fd = out[1]
        config.stderr_fd = err[1]
        config.landlock_ruleset_fd = -1
        config.pdeath_signal = SIGKILL
        config.parent_pid = parentIsWard ? getpid() : 1
        var failure = ward_spawn_error()
        var pidfd: Int32 = -1
        let pid = argv.withUnsafeMutableBufferPointer { a in
            envp.withUnsafeMutableBufferPointer { e in
                config.argv = UnsafePointer(a.baseAddress)
                config.envp = UnsafePointer(e.baseAddress)
                return ward_spawn(&config, &failure, &pidfd)
            }
        }
        if parentIsWard {
            try #require(pid > 0, "\(String(cString: ward_step_name(failure.step))): \(failure.error)")
            var exited: Int32 = 0, code: Int32 = 0, signal: Int32 = 0
            ward_wait(pid, &exited, &code, &signal)
            close(pidfd)
            #expect(exited != 0 && code == 0)
        } else {
            #expect(pid == -1, "a child whose parent is not ward started")
            #expect(failure.step == Int32(WARD_STEP_PDEATHSIG.rawValue) && failure.error == ESRCH,
                    "\(String(cString: ward_step_name(failure.step))): \(failure.error)")
        }
    }
}

/// The child stack a thread maps for its spawns goes when the thread does: the pools'
/// threads come and go, and each left 64 KiB mapped for the life of ward.
@Suite("Spawn stacks")
struct SpawnStackTests {
    final class Spawner: @unchecked Sendable {
        // @unchecked: written by the spawning thread, read after it was joined.
        let sandbox: Sandbox
        var stack: UnsafeRawPointer?
        var status: CallStatus?
        init(_ sandbox: Sandbox) { self.sandbox = sandbox }
    }

    @Test func aThreadsChildStackIsUnmappedWhenItExits() throws {
        let spawner = Spawner(try Fixture.sandbox(workspace: Fixture.workspace(), useZygotes: false))
        var thread = pthread_t()
        let context = Unmanaged.passRetained(spawner).toOpaque()
        #expect(pthread_create(&thread, nil, { raw in
            let spawner = Unmanaged<Spawner>.fromOpaque(raw!).takeRetainedValue()
            spawner.status = (try? spawner.sandbox.run(tool: "shell", arguments: .object(["command": .string("true")])))?.status
            spawner.stack = ward_thread_stack()
            return nil
        }, context) == 0)
        #expect(pthread_join(thread, nil) == 0)
        #expect(spawner.status == .succeeded)
        let stack = try #require(spawner.stack, "the thread spawned without a stack of its own")
        // mincore fails with ENOMEM on a range that is not mapped (any more).
        var resident = [UInt8](repeating: 0, count: 16)
        let rc = mincore(UnsafeMutableRawPointer(mutating: stack), 64 * 1024, &resident)
        #expect(rc == -1 && errno == ENOMEM, "the exited thread's child stack at \(stack) is still mapped")
        // Positive control: this thread's own stack, once it spawned, is mapped.
        _ = try spawner.sandbox.run(tool: "shell", arguments: .object(["command": .string("true")]))
        let own = try #require(ward_thread_stack())
        #expect(mincore(UnsafeMutableRawPointer(mutating: own), 64 * 1024, &resident) == 0)
    }
}
