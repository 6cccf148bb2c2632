import CWardOS
import CWardSpawn
import WardCore
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// One call of a tool, from its prepared spawn to its outcome: `Sandbox.run` is
/// `prepareCall` then `run`. In between, the supervisor may `park` the call: its child is
/// created and confined while the call's `running` record is being fsynced, and waits at a
/// gate before execve, so the tool itself still starts only after the record is durable.
/// Used by one thread at a time.
public final class SandboxCall: @unchecked Sendable {
    // @unchecked: one thread drives a call; the C structures it owns are read by the child,
    // which shares ward's memory until it execs.
    let sandbox: Sandbox
    let name: String
    let tool: Sandbox.PreparedTool
    let executable: String
    private let argv: CStringArray
    /// The tool's argv, for its trace's first effect.
    private let arguments: [String]
    private let environment: CStringArray
    private let path: UnsafeMutablePointer<CChar>
    private let cwd: UnsafeMutablePointer<CChar>
    private let config = UnsafeMutablePointer<ward_spawn_config>.allocate(capacity: 1)
    private let spawnError = UnsafeMutablePointer<ward_spawn_error>.allocate(capacity: 1)
    private let pidfd = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    private let rlimits: UnsafeMutableBufferPointer<ward_rlimit>
    private let cgroupFDs: UnsafeMutableBufferPointer<Int32>
    private let slot: CgroupSlot?
    /// The pool `slot` came from, given back to it when the call ends.
    private let cgroups: CgroupPool?
    private var stdinFD: Int32 = -1
    private var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
    /// A server's stdin: ward keeps the write end.
    private var inPipe: [Int32] = [-1, -1]
    /// The parked child's gate: a pipe whose read end it waits on.
    private var gate: [Int32] = [-1, -1]
    /// The zygote holding a parked child (reserved until the child execs or gives up).
    private var parkedIn: Zygote?
    private var done = false
    /// The call's effect trace, when its policy traces it.
    private let tracer: Tracer?

    /// - Parameter arguments: the tool's stdin; nil for a server, whose stdin is a pipe
    ///   (`launch`).
    init(sandbox: Sandbox, name: String, tool: Sandbox.PreparedTool, executable: String, argv: [String], environment: [String],
         arguments: JSONValue?, ownPIDNamespace: Bool? = nil) throws(SandboxError) {
        self.sandbox = sandbox
        self.name = name
        self.tool = tool
        self.executable = executable
        self.argv = CStringArray(argv)
        self.arguments = argv
        self.environment = CStringArray(environment)
        path = strdup(executable)
        cwd = strdup(sandbox.workspace)
        config.initialize(to: ward_spawn_config())
        spawnError.initialize(to: ward_spawn_error())
        pidfd.initialize(to: -1)
        let policy = tool.policy
        // Containment of the whole tree, and the limits only the kernel's cgroups can hold.
        var acquired: CgroupSlot?
        var failure: SandboxError?
        let containment = sandbox.containment
        cgroups = containment.treeKill == .cgroup ? containment.cgroups : nil
        if let cgroups {
            do { acquired = try cgroups.acquire() } catch { failure = error }
        }
        slot = acquired
        // A call its policy traces runs traced or not at all: never silently untraced.
        let program = UnsafeRawPointer(path)
        do {
            if let filter = tool.confinement.trace, arguments != nil { tracer = try Tracer(filter: filter, sparing: program) } else { tracer = nil }
        } catch {
            tracer = nil
            failure = failure ?? error
        }
        let enforced = slot?.apply(processes: policy.limits.processes, memory: policy.limits.memory) ?? (processes: false, memory: false)
        // RLIMIT_NPROC counts the processes of a uid in a user namespace: where calls share
        // one, it would bound them all together, not each call.
        let shared = sandbox.confinement.callsShareProcessCount(zygote: tool.zygote != nil)
        let limits = Containment.rlimits(policy.limits, cgroupProcesses: enforced.processes || shared, cgroupMemory: enforced.memory)
        rlimits = .allocate(capacity: limits.count)
        _ = rlimits.initialize(from: limits)
        let fds = slot?.joinFDs ?? []
        cgroupFDs = .allocate(capacity: fds.count)
        _ = cgroupFDs.initialize(from: fds)
        if let failure { throw failure }  // deinit frees what was made

        if let arguments {
            // stdin: the arguments JSON in a memfd, so any size is handed over without a writer thread.
            // Sealed once written: the tool holds it read-write as fd 0, and must not turn it into
            // a program of its own (`execve("/proc/self/fd/0")`).
            stdinFD = ward_input_memfd("ward-args")
            guard stdinFD >= 0 else { throw SandboxError(.internalError, "memfd_create failed: \(errnoName(errno))", errno: errno) }
            guard OS.writeAll(stdinFD, arguments.canonicalBytes) else {
                throw SandboxError(.internalError, "writing the arguments failed: \(errnoName(errno))", errno: errno)
            }
            guard ward_seal_contents(stdinFD) == 0 else {
                throw SandboxError(.internalError, "sealing the arguments failed: \(errnoName(errno))", errno: errno)
            }
            lseek(stdinFD, 0, SEEK_SET)
        } else {
            guard ward_pipe_cloexec(&inPipe) == 0 else { throw SandboxError(.internalError, "pipe2 failed: \(errnoName(errno))", errno: errno) }
            stdinFD = inPipe[0]
            inPipe[0] = -1
        }
        guard ward_pipe_cloexec(&outPipe) == 0, ward_pipe_cloexec(&errPipe) == 0 else {
            throw SandboxError(.internalError, "pipe2 failed: \(errnoName(errno))", errno: errno)
        }

        let newPidNS = ownPIDNamespace ?? containment.pidNamespacePerCall
        config.pointee.path = UnsafePointer(path)
        config.pointee.argv = UnsafePointer(self.argv.pointers)
        config.pointee.envp = UnsafePointer(self.environment.pointers)
        config.pointee.cwd = UnsafePointer(cwd)
        config.pointee.stdin_fd = stdinFD
        config.pointee.stdout_fd = outPipe[1]
        config.pointee.stderr_fd = errPipe[1]
        config.pointee.cgroup_join_fds = UnsafePointer(cgroupFDs.baseAddress)
        config.pointee.cgroup_join_count = Int32(cgroupFDs.count)
        config.pointee.new_pid_namespace = newPidNS ? 1 : 0
        config.pointee.new_net_namespace = tool.confinement.newNetNamespace ? 1 : 0
        config.pointee.rlimits = UnsafePointer(rlimits.baseAddress)
        config.pointee.rlimit_count = Int32(rlimits.count)
        // The policy's filter (for a direct spawn: a zygote's children inherit it instead),
        // Landlock ruleset, identity and capabilities; `tool` keeps them alive.
        sandbox.confinement.configureCall(&config.pointee, tool: tool.confinement, newPIDNamespace: newPidNS)
        if let tracer {
            config.pointee.trace_bpf = UnsafeRawPointer(tracer.program.aligned.baseAddress)
            config.pointee.trace_bpf_len = UInt16(tracer.program.instructionCount)
            config.pointee.trace_fd = tracer.childFD
        }
        config.pointee.pdeath_signal = SIGKILL
        config.pointee.parent_pid = getpid()
    }

    deinit {
        if parkedIn != nil { cancel() }
        for fd in [stdinFD, outPipe[0], outPipe[1], errPipe[0], errPipe[1], inPipe[1], gate[0], gate[1]] where fd >= 0 { close(fd) }
        if let slot, !done { cgroups?.release(slot) }
        free(path)
        free(cwd)
        config.deallocate()
        spawnError.deallocate()
        pidfd.deallocate()
        rlimits.deallocate()
        cgroupFDs.deallocate()
    }

    /// Creates the child through the tool's zygote and leaves it confined and waiting before
    /// execve. Returns false, changing nothing, when the tool has no zygote or its zygote is
    /// busy with another call: `run` then spawns as usual.
    @discardableResult
    public func park() -> Bool {
        guard parkedIn == nil, !done, let zygote = tool.zygote, ward_pipe_cloexec(&gate) == 0 else { return false }
        config.pointee.gate_fd = gate[0]
        if zygote.startParked(config, spawnError, pidfd) {
            parkedIn = zygote
            return true
        }
        config.pointee.gate_fd = 0
        close(gate[0]); close(gate[1])
        gate = [-1, -1]
        return false
    }

    /// The processes in the call's cgroup: its child once it has joined (before its gate),
    /// and whatever the tool started. Empty without a cgroup. For tests, which must follow
    /// their own call's processes, not count this process's children.
    var processIDs: [pid_t] { slot?.members() ?? [] }

    /// Ends a parked call without running its tool: the child exits at the gate and is reaped.
    public func cancel() {
        guard let zygote = parkedIn else { return }
        parkedIn = nil
        done = true
        var no: UInt8 = 0
        _ = write(gate[1], &no, 1)
        if case .spawned(let pid) = zygote.finishParked(spawnError, pidfd), pid > 0 {
            // It exec'd after all (it cannot: it was told no); make sure it is gone.
            sandbox.containment.killTree(pid: pid, slot: slot)
            kill(pid, SIGKILL)
            var exited: Int32 = 0, code: Int32 = 0, signal: Int32 = 0
            ward_wait(pid, &exited, &code, &signal)
            close(pidfd.pointee)
        }
        if let slot { cgroups?.release(slot) }
    }

    /// How a started call ended (`start`).
    public enum End: Sendable {
        /// The tool ran; this is its outcome.
        case finished(ToolOutcome)
        /// The policy or the kernel refused to start it: no tool ran.
        case refused(SandboxError)
        /// The process starting it (its zygote) died mid-start: the tool may have begun;
        /// whatever of it could be found was killed. Not to be started again blindly.
        case lostStart(SandboxError)
    }

    /// The launch seam: starts the tool (opens a parked child's gate) once the caller has
    /// made the call's record durable, and waits for it; the tool and everything it started
    /// are gone when this returns.
    /// - Parameters:
    ///   - capture: an `OutputCapture` file (its header written) that gets the output as it
    ///     comes, a heartbeat every second, and the exit; -1 for none.
    ///   - cancellation: kills the tool's tree from another thread (the call ends `killed`).
    public func start(capture: Int32 = -1, cancellation: CallCancellation? = nil) -> End {
        do { return .finished(try run(capture: capture, cancellation: cancellation)) } catch where error.code == .startUnknown {
            return .lostStart(error)
        } catch {
            return .refused(error)
        }
    }

    /// `start` for callers to whom a call that did not finish is an error.
    /// - Throws: `SandboxError` when the call could not start (no tool ran), `startUnknown`
    ///   when its start was lost.
    public func run(capture: Int32 = -1, cancellation: CallCancellation? = nil) throws(SandboxError) -> ToolOutcome {
        precondition(!done, "a SandboxCall runs once")
        done = true
        let policy = tool.policy
        let start = Sandbox.monotonicNanoseconds()
        var pid: pid_t = -1
        var spawned = Zygote.Spawn.unavailable
        if let zygote = parkedIn {
            parkedIn = nil
            var go: UInt8 = 1
            _ = write(gate[1], &go, 1)
            spawned = zygote.finishParked(spawnError, pidfd)
        } else if let zygote = tool.zygote {
            spawned = zygote.spawn(&config.pointee, &spawnError.pointee, &pidfd.pointee)
        }
        switch spawned {
        case .spawned(let p):
            pid = p
        case .unavailable:
            config.pointee.gate_fd = 0
            pid = ward_spawn(config, spawnError, pidfd)
        case .lost:
            _ = tracer?.finish()
            throw lost()
        }
        close(outPipe[1])
        close(errPipe[1])
        outPipe[1] = -1
        errPipe[1] = -1
        guard pid > 0 else {
            _ = tracer?.finish()
            if let slot { cgroups?.release(slot) }
            let step = String(cString: ward_step_name(spawnError.pointee.step))
            let code: SandboxError.Code = spawnError.pointee.step == Int32(WARD_STEP_EXECVE.rawValue) ? .policyDenied : .spawnFailed
            throw SandboxError(code, "\(step) failed: \(errnoName(spawnError.pointee.error)) (tool \(name), \(executable))", errno: spawnError.pointee.error)
        }
        defer { close(pidfd.pointee) }
        tracer?.begin(capture: capture, at: start, pid: pid, executable: executable, argv: arguments)
        sandbox.containment.register(pid, slot)
        defer { sandbox.containment.unregister(pid) }
        if let cancellation {
            cancellation.arm { [containment = sandbox.containment, slot, pid] in containment.terminate(pid: pid, slot: slot) }
        }
        _ = FailPoints.hit(.afterSpawn)

        var collector = OutputCollector(fds: [outPipe[0], errPipe[0]], limit: Int(policy.limits.output), capture: capture)
        let deadline = start + policy.timeoutMilliseconds * 1_000_000
        // A captured call's file is touched every second: its mtime tells an operator how
        // long the tool ran before a crash of ward, even when it printed nothing.
        var heartbeat = capture >= 0 ? start + 1_000_000_000 : UInt64.max
        var timedOut = false
        // Read output until the tool exits or the deadline passes.
        while !collector.pollOnce(extra: pidfd.pointee, listener: tracer?.listener ?? -1, until: min(deadline, heartbeat), service: { tracer?.service() }) {
            let now = Sandbox.monotonicNanoseconds()
            if now >= deadline {
                timedOut = true
                break
            }
            if now >= heartbeat {
                futimens(capture, nil)
                heartbeat = now + 1_000_000_000
            }
        }
        if timedOut {
            sandbox.containment.killTree(pid: pid, slot: slot)
        }
        cancellation?.disarm()
        var exited: Int32 = 0, code: Int32 = 0, signal: Int32 = 0
        ward_wait(pid, &exited, &code, &signal)
        // The tool is gone; whatever it started goes with it (docs/design.md, *A call's
        // processes end with it*).
        if !timedOut { sandbox.containment.killTree(pid: pid, slot: slot) }
        collector.drain(until: Sandbox.monotonicNanoseconds() + 2_000_000_000)
        (outPipe[0], errPipe[0]) = (collector.fds[0], collector.fds[1])
        let durationMs = Double(Sandbox.monotonicNanoseconds() - start) / 1e6
        if let slot { cgroups?.release(slot) }
        // Every process of the call is gone: nothing more can be attempted.
        let trace = tracer?.finish()

        let status: CallStatus
        if timedOut { status = .timedOut } else if exited != 0 { status = code == 0 ? .succeeded : .failed } else { status = .killed }
        var outcome = ToolOutcome(status: status, exitCode: exited != 0 ? code : nil, signal: signal != 0 ? signal : nil,
                                  stdout: collector.buffers[0], stderr: collector.buffers[1], truncated: collector.truncated,
                                  durationMs: (durationMs * 1000).rounded() / 1000)
        outcome.trace = trace
        if capture >= 0 {
            // How the tool ended, for the operator if ward dies before recording it.
            let exit = JSONValue.object([
                "status": .string(status.rawValue), "exitCode": outcome.exitCode.map { .number(Double($0)) } ?? .null,
                "signal": outcome.signal.map { .number(Double($0)) } ?? .null, "durationMs": .number(outcome.durationMs),
            ])
            collector.record(.exit, exit.canonicalBytes[...])
        }
        return outcome
    }
}

extension SandboxCall {
    /// Starts a server (made with `arguments: nil`) and leaves it running: directly, never
    /// through a zygote, which serves short calls. The process owns the pipes and the cgroup
    /// from then on.
    func launch() throws(SandboxError) -> SandboxedProcess {
        precondition(!done && inPipe[1] >= 0, "launch starts a server once")
        done = true
        config.pointee.gate_fd = 0
        let pid = ward_spawn(config, spawnError, pidfd)
        for fd in [stdinFD, outPipe[1], errPipe[1]] { close(fd) }
        (stdinFD, outPipe[1], errPipe[1]) = (-1, -1, -1)
        guard pid > 0 else {
            if let slot { cgroups?.release(slot) }
            let step = String(cString: ward_step_name(spawnError.pointee.step))
            throw SandboxError(.spawnFailed, "\(step) failed: \(errnoName(spawnError.pointee.error)) (server \(name), \(executable))", errno: spawnError.pointee.error)
        }
        defer { (inPipe[1], outPipe[0], errPipe[0]) = (-1, -1, -1) }
        return SandboxedProcess(pid: pid, pidfd: pidfd.pointee, input: inPipe[1], output: outPipe[0], errors: errPipe[0],
                                containment: sandbox.containment, slot: slot, cgroups: cgroups)
    }

    /// The zygote died after it took this call: whether the tool began is unknown, so it is
    /// not started again here (that could run it twice). The call's child, if there was
    /// one, was killed (`ward_zygote_spawn_finish`); whatever it started dies with the
    /// cgroup (or with the child, as its PID namespace's init).
    private func lost() -> SandboxError {
        if let slot { _ = slot.killAll(); cgroups?.release(slot) }
        return SandboxError(.startUnknown, "the zygote of tool \(name) died while starting the call: the tool may have started")
    }

}

/// A NULL-terminated array of C strings that lives as long as it does (a parked child
/// reads argv and envp at execve, after the call that built them returned).
final class CStringArray {
    let pointers: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let count: Int

    init(_ strings: [String]) {
        count = strings.count
        pointers = .allocate(capacity: count + 1)
        for (i, s) in strings.enumerated() { (pointers + i).initialize(to: strdup(s)) }
        (pointers + count).initialize(to: nil)
    }

    deinit {
        for i in 0..<count { free(pointers[i]) }
        pointers.deallocate()
    }
}
