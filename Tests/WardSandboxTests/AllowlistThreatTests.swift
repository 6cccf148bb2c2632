import Foundation
import Testing
import WardSandbox
import WardTestSupport

/// The allowlist holds no more than the policy says: process-targeting syscalls reach only
/// the call's own processes, `network = "none"` leaves no socket call that reaches anything,
/// no memfd is executable. Each attack is also run outside the sandbox, as the same uid, and
/// must work there: a refusal inside is the sandbox's doing, not the fixture's.
@Suite("Threats: the allowlist, least privilege")
struct AllowlistThreatTests {
    /// The uid a mode's tools and supervisor run as.
    static func uid(_ mode: Mode) -> uid_t { mode.isUnprivileged ? Mode.nobody : 0 }

    /// Whether the mode's calls share the host's PID namespace (cgroup containment): then the
    /// seccomp filter refuses other pids (EPERM); in a PID namespace of their own they cannot
    /// even see them (ESRCH).
    static func sharesPIDs(_ mode: Mode) -> Bool { Harness.shared.callsSharePIDs(mode) }

    /// ward-hostile run directly, unsandboxed, as the mode's uid, in its workspace.
    static func outside(_ mode: Mode, _ behaviour: String, _ arg: String = "") throws -> String {
        let ws = Harness.shared.workspaces[mode]!
        var argv = ["./ward-hostile", behaviour] + (arg.isEmpty ? [] : [arg])
        if mode.isUnprivileged { argv = ["--reuid=\(Mode.nobody)", "--regid=\(Mode.nobody)", "--clear-groups", "--"] + argv }
        let r = try BuildProducts.run(mode.isUnprivileged ? "/usr/bin/setpriv" : ws + "/ward-hostile",
                                      mode.isUnprivileged ? argv : Array(argv.dropFirst()), in: ws)
        return r.stdout
    }

    /// The result a probe reported for `name`, e.g. "EPERM" or "OK (…)".
    static func result(_ output: String, _ name: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix(name + ": ") }.map { String($0.dropFirst(name.count + 2)) }
    }

    /// A process that belongs to neither ward nor the call, of the mode's uid: the kernel
    /// alone would let a tool of that uid act on it.
    static func bystander(_ mode: Mode) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mode.isUnprivileged ? "/usr/bin/setpriv" : "/bin/sleep")
        p.arguments = (mode.isUnprivileged ? ["--reuid=\(Mode.nobody)", "--regid=\(Mode.nobody)", "--clear-groups", "--", "/bin/sleep"] : []) + ["600"]
        try p.run()
        return p
    }

    static let targeting = ["prlimit", "setpriority", "sched_setaffinity", "ioprio_set", "pidfd_open"]

    @Test("process-targeting syscalls reach only the call's own processes", arguments: Mode.allCases)
    func processTargets(mode: Mode) throws {
        let sleeper = try Self.bystander(mode)
        // SIGKILL: a spawn inherits the test thread's blocked signals, SIGTERM among them.
        defer { kill(sleeper.processIdentifier, SIGKILL); sleeper.waitUntilExit() }
        // ward itself (in the unprivileged mode a root process, this one, stands in: its
        // supervisor's pid is not known here) and the bystander.
        let targets = ["\(getpid())", "\(sleeper.processIdentifier)"]
        let refused = Self.sharesPIDs(mode) ? "EPERM" : "ESRCH"
        for behaviour in Self.targeting {
            for target in targets {
                let r = try Harness.shared.hostile(mode, behaviour, target, tool: "shell-pids")
                #expect(Self.result(r.stdout, behaviour) == refused, "\(behaviour) \(target): \(r)")
            }
            // Positive controls: outside the sandbox the same probe works on the bystander…
            let out = try Self.outside(mode, behaviour, "\(sleeper.processIdentifier)")
            #expect(Self.result(out, behaviour) == "OK", "outside, \(behaviour): \(out)")
            // …and inside, on the tool itself (pid 0), the syscall is allowed: the pid is
            // what is refused. pidfd_open has no pid 0; it is refused while calls share pids.
            let own = try Harness.shared.hostile(mode, behaviour, "0", tool: "shell-pids")
            let expected = behaviour == "pidfd_open" && Self.sharesPIDs(mode) ? "EPERM" : "OK"
            #expect(Self.result(own.stdout, behaviour) == expected, "\(behaviour) 0: \(own)")
        }
        // ward's own process as the outside target (as root: ward's uid in these modes).
        if !mode.isUnprivileged {
            let out = try Self.outside(mode, "prlimit", "\(getpid())")
            #expect(Self.result(out, "prlimit") == "OK", "\(out)")
        }
        // PRIO_USER with who 0 is every process of the tool's uid: refused while calls share
        // pids; in a PID namespace of its own it reaches only the call's processes.
        let user = try Harness.shared.hostile(mode, "setpriority-user", tool: "shell-pids")
        #expect(Self.result(user.stdout, "setpriority-user") == (Self.sharesPIDs(mode) ? "EPERM" : "OK"), "\(user)")
    }

    @Test("network = none: no socket call that reaches anything", arguments: Mode.allCases)
    func socketCalls(mode: Mode) throws {
        let calls = ["bind", "listen", "connect", "accept", "setsockopt", "getsockopt"]
        let none = try Harness.shared.hostile(mode, "socket-calls")
        for call in calls { #expect(Self.result(none.stdout, call) == "EPERM", "\(call): \(none)") }
        // A socketpair still carries bytes (asyncio, multiprocessing, libuv need it).
        #expect(Self.result(none.stdout, "send") == "OK", "\(none)")
        // Positive controls: outside, and with network = "any", every call reaches the kernel.
        let any = try Harness.shared.hostile(mode, "socket-calls", tool: "shell-net")
        let out = try Self.outside(mode, "socket-calls")
        for output in [any.stdout, out] {
            for call in calls { #expect(Self.result(output, call).map { $0 != "EPERM" } == true, "\(call): \(output)") }
        }

        // A datagram pair's end reaches a host datagram socket by its path (Landlock does
        // not check): refused without the host network, working outside and with it.
        let listener = try Listener.unix(abstract: false, type: SOCK_DGRAM)
        defer { listener.close() }
        for tool in ["shell", "shell-loopback"] {
            let r = try Harness.shared.hostile(mode, "dgram-sendto", listener.name, tool: tool)
            #expect(Self.result(r.stdout, "dgram-sendto") == "EPERM", "\(tool): \(r)")
        }
        let net = try Harness.shared.hostile(mode, "dgram-sendto", listener.name, tool: "shell-net")
        #expect(Self.result(net.stdout, "dgram-sendto") == "OK", "\(net)")
        #expect(Self.result(try Self.outside(mode, "dgram-sendto", listener.name), "dgram-sendto") == "OK")
    }

    @Test("fileless exec, prctl and unshare: refused inside, working outside", arguments: Mode.allCases)
    func outsideControls(mode: Mode) throws {
        // The refusals are rows of ThreatTests' table; here the same probes succeed unsandboxed.
        for behaviour in ["memfd-exec", "memfd-proc-exec"] {
            let out = try Self.outside(mode, behaviour)
            #expect(Self.result(out, behaviour) == "OK (fileless exec ran)", "\(behaviour): \(out)")
        }
        for behaviour in ["prctl-user-dispatch", "prctl-keepcaps", "unshare-none"] {
            let out = try Self.outside(mode, behaviour)
            #expect(Self.result(out, behaviour) == "OK", "\(behaviour): \(out)")
        }
        // A policy that lists unshare gets it without namespace flags, as explain says.
        let plain = try Harness.shared.hostile(mode, "unshare-none", tool: "shell-pids")
        #expect(Self.result(plain.stdout, "unshare-none") == "OK", "\(plain)")
        let user = try Harness.shared.hostile(mode, "unshare-user", tool: "shell-pids")
        #expect(Self.result(user.stdout, "unshare-user") == "EPERM", "\(user)")
    }

    @Test("policy explain says what the filter does")
    func explain() throws {
        func explain(_ tool: String) throws -> String {
            try Fixture.cli(["policy", "explain", "--policies", Fixture.testPolicies, "--workspace", Harness.shared.workspaces[.root]!, tool]).stdout
        }
        let shell = try explain("shell")
        let allowed = shell.split(separator: "\n").first { $0.hasPrefix("syscalls") }.map { Set($0.split(separator: " ").map(String.init)) } ?? []
        // What the probes above found refused is not in the allowed list, and is said.
        for name in ["bind", "connect", "listen", "accept", "setsockopt", "getsockopt", "pidfd_open", "unshare", "socket"] {
            #expect(!allowed.contains(name), "\(name) listed as allowed:\n\(shell)")
        }
        for needle in ["bind, connect", "pidfd_open: calls share the host's PID namespace", "prctl: options PR_SET_PDEATHSIG",
                       "memfd_create: MFD_NOEXEC_SEAL only", "prlimit64: pid 0 (itself) only", "socketpair: AF_UNIX stream and seqpacket"] {
            #expect(shell.contains(needle), "explain lacks \(needle):\n\(shell)")
        }
        let pids = try explain("shell-pids")
        for needle in ["unshare: without namespace flags", "setpriority: itself or its process group", "sched_setaffinity: pid 0"] {
            #expect(pids.contains(needle), "explain lacks \(needle):\n\(pids)")
        }
    }
}
