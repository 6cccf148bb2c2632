import Foundation
import Testing
import WardCore
import WardPolicy
import WardSandbox
import WardTestSupport

/// Each traced call's effects, recorded by the kernel's seccomp user notification from real
/// tools: what they create, append, rename, delete and chmod, what they execute and whom
/// they connect to, through a zygote and through the direct spawn, as root and as an
/// unprivileged user; and the trace's limits (attempts, not observations; a cap).
@Suite("Effect trace: what a call attempted to change", .serialized)
struct TraceTests {
    static let policies: String = {
        let dir = Fixture.temporaryDirectory("trace-policies")
        try! FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
        try! """
        [defaults]
        syscalls = ["@system-service"]
        read = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/dev/urandom", "{workspace}"]
        write = ["{workspace}", "/dev/null"]
        env = ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME={workspace}", "PYTHONDONTWRITEBYTECODE=1"]
        timeout = "60s"

        [tools.shell]
        command = ["/bin/sh", "-c", "{command}"]

        [tools.shell-loopback]
        command = ["/bin/sh", "-c", "{command}"]
        network = "loopback"

        [tools.quiet]
        command = ["/bin/sh", "-c", "{command}"]
        trace = false

        [tools.listed]
        command = ["/bin/sh", "-c", "{command}"]
        effect = "idempotent"

        [tools.listed-traced]
        command = ["/bin/sh", "-c", "{command}"]
        effect = "idempotent"
        trace = true
        """.write(toFile: dir + "/tools.toml", atomically: true, encoding: .utf8)
        return dir
    }()

    func sandbox(_ workspace: String, zygote: Bool) throws -> Sandbox {
        try Sandbox(policies: try PolicyLoader.load(directory: TraceTests.policies), workspace: workspace, useZygotes: zygote)
    }

    func run(_ sandbox: Sandbox, _ command: String) throws -> ToolOutcome {
        try run(sandbox, "shell", command)
    }

    func run(_ sandbox: Sandbox, _ tool: String, _ command: String) throws -> ToolOutcome {
        try sandbox.run(tool: tool, arguments: .object(["command": .string(command)]))
    }

    /// The effects but the programs executed, as `kind path [→ to]`.
    func changes(_ trace: Trace?) -> [String] {
        (trace?.effects ?? []).filter { $0.kind != .exec }.map { e in
            [e.kind.rawValue, e.path ?? e.address ?? "?"].joined(separator: " ") + (e.to.map { " → " + $0 } ?? "")
                + (e.target.map { " -> " + $0 } ?? "")
        }
    }

    @Test(arguments: [true, false]) func theEffectsOfKnownCommandsAreRecordedExactly(zygote: Bool) throws {
        let ws = Fixture.temporaryDirectory("trace-ws")
        let s = try sandbox(ws, zygote: zygote)
        let o = try run(s, """
            echo one > a.txt; echo two >> a.txt; mv a.txt b.txt; chmod 640 b.txt; mkdir -p d/e; ln -s b.txt link
            echo three > link; echo four > d/e/../../c.txt; rm b.txt; rmdir d/e; ln c.txt hard; truncate -s 0 c.txt
            """)
        #expect(o.status == .succeeded, "\(o.err)")
        let trace = try #require(o.trace, "a non-idempotent tool is traced by default")
        #expect(trace.dropped == 0 && !trace.truncated)
        #expect(changes(trace) == [
            "create \(ws)/a.txt", "write \(ws)/a.txt", "rename \(ws)/a.txt → \(ws)/b.txt", "chmod \(ws)/b.txt", "mkdir \(ws)/d",
            "mkdir \(ws)/d/e", "symlink \(ws)/link -> b.txt",
            // Through the symlink: the file written is the one it points at.
            "write \(ws)/b.txt",
            // `..` resolved against the directories as they are.
            "create \(ws)/c.txt", "delete \(ws)/b.txt", "rmdir \(ws)/d/e", "link \(ws)/c.txt → \(ws)/hard", "write \(ws)/c.txt",
        ], "\(trace.lines.joined(separator: "\n"))")
        let byKind = Dictionary(grouping: trace.effects, by: \.kind)
        #expect(byKind[.write]?.first?.flags == ["append"] && byKind[.chmod]?.first?.mode == 0o640)
        #expect(trace.effects.first { $0.kind == .create }?.mode == 0o666)
        // The programs: the tool's own first, with its argv, then each it started.
        let execs = byKind[.exec] ?? []
        #expect(execs.first?.argv?.prefix(2) == ["/bin/sh", "-c"] && execs.first?.path == "/usr/bin/dash", "\(execs.first.map(\.description) ?? "")")
        #expect(execs.compactMap { $0.argv?.first } == ["/bin/sh", "mv", "chmod", "mkdir", "ln", "rm", "rmdir", "ln", "truncate"])
        #expect(trace.effects.map(\.atMs) == trace.effects.map(\.atMs).sorted())
    }

    /// Paths relative to a directory fd (rm -r walks with them) are resolved through the
    /// tool's fd; the tool's names for itself (/dev/stderr, /proc/self) are the tool's, never
    /// ward's files; one effect is bounded however long the arguments a tool passes.
    @Test func directoryFDsTheToolsOwnNamesAndLongArgumentsAreHandled() throws {
        let ws = Fixture.temporaryDirectory("trace-fds")
        let o = try run(try sandbox(ws, zygote: true), """
            mkdir -p x/y && : > x/y/z && rm -r x; (echo to-stderr > /dev/stderr) 2>&1; (echo self > /proc/self/fd/1) 2>&1
            /bin/true "$(yes a | head -c 100000 | tr -d '\\n')"
            """)
        #expect(o.status == .succeeded, "\(o.err)")
        let trace = try #require(o.trace)
        #expect(changes(trace).filter { $0.hasPrefix("delete") || $0.hasPrefix("rmdir") } == ["delete \(ws)/x/y/z", "rmdir \(ws)/x/y", "rmdir \(ws)/x"],
                "\(trace.lines)")
        // Attempted (Landlock refuses both here), and named as the tool's own fds.
        let streams = trace.effects.filter { $0.kind == .write && $0.path?.hasPrefix("/proc/") == true }
        #expect(streams.map(\.path) == streams.map { "/proc/\($0.pid)/fd/\($0 == streams.first ? 2 : 1)" }, "\(trace.lines)")
        #expect(streams.count == 2 && !trace.effects.contains { $0.path?.hasPrefix("/proc/\(getpid())/") == true })
        let long = try #require(trace.effects.last { $0.kind == .exec })
        #expect(long.argv?.first == "/bin/true" && (long.argv?.joined().utf8.count ?? .max) <= 4096 && long.argv?.last?.hasSuffix("…") == true)
        #expect(trace.json.canonical.utf8.count < 8192, "one long argument makes a trace of \(trace.json.canonical.utf8.count) bytes")
    }

    @Test(arguments: [true, false]) func whatAToolsChildrenDoIsTheCalls(zygote: Bool) throws {
        let ws = Fixture.temporaryDirectory("trace-child")
        let o = try run(try sandbox(ws, zygote: zygote), "sh -c 'sh -c \"echo deep > deep.txt\"' && echo done")
        #expect(o.out == "done\n")
        let trace = try #require(o.trace)
        let execs = trace.effects.filter { $0.kind == .exec }
        #expect(execs.count == 3 && Set(execs.map(\.pid)).count == 3, "\(trace.lines)")
        let write = try #require(trace.effects.first { $0.kind == .create })
        #expect(write.path == ws + "/deep.txt" && write.pid == execs.last?.pid, "\(trace.lines)")
    }

    @Test func socketsConnectedAndBoundOnLoopbackAreRecorded() throws {
        let ws = Fixture.temporaryDirectory("trace-net")
        let o = try run(try sandbox(ws, zygote: true), "shell-loopback", """
            python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); p = s.getsockname()[1]; \
            socket.create_connection(("127.0.0.1", p)); print(p)'
            """)
        #expect(o.status == .succeeded, "\(o.err)")
        let port = try #require(Int(o.out.trimmingCharacters(in: .whitespacesAndNewlines)))
        let network = (o.trace?.effects ?? []).filter { $0.kind == .bind || $0.kind == .connect }.map(\.description)
        #expect(network == ["bind 127.0.0.1:0", "connect 127.0.0.1:\(port)"], "\(network)")
    }

    @Test func untracedToolsRecordNothingAndTheKeyTurnsTracingOnOrOff() throws {
        let ws = Fixture.temporaryDirectory("trace-off")
        let s = try sandbox(ws, zygote: true)
        #expect(try run(s, "quiet", "echo x > q.txt").trace == nil, "trace = false")
        #expect(try run(s, "listed", "echo x > l.txt").trace == nil, "idempotent: not traced by default")
        #expect(changes(try run(s, "listed-traced", "echo x > t.txt").trace) == ["create \(ws)/t.txt"])
    }

    /// The trace records what was attempted: a thread that rewrites the path after ward read
    /// it can make the kernel open another file than the one recorded. The trace says so of
    /// itself, and never names a path the tool did not hold at some point.
    @Test func aRacingThreadsPathIsRecordedAsAttempted() throws {
        let ws = Fixture.workspace()
        let o = try Fixture.sandbox(workspace: ws).run(tool: "shell", arguments: .object(["command": .string("./ward-hostile race-open 300")]))
        #expect(o.out == "race-open: OK\n", "\(o.out)\(o.err)")
        let trace = try #require(o.trace)
        #expect(trace.json.objectValue?["mode"] == .string("attempted"))
        let opened = trace.effects.filter { $0.kind == .create || $0.kind == .write }
        #expect(opened.count == 300)
        #expect(opened.allSatisfy { $0.path.map { $0.range(of: #"/race-[ab]-[0-9]+$"#, options: .regularExpression) != nil } == true })
        let made = Set(try FileManager.default.contentsOfDirectory(atPath: ws).filter { $0.hasPrefix("race-") })
        #expect(made.count == 300)
    }

    /// 100,000 files made by one call: ward (the CLI, its own process here) keeps the first
    /// 10,000 effects and counts the rest, and its peak memory stays that of a small trace.
    @Test func aFloodOfEffectsIsCappedAndSaysSo() throws {
        let ws = Fixture.temporaryDirectory("trace-flood")
        let flood = "mkdir f && cd f && i=0; while [ $i -lt 100000 ]; do : > $i; i=$((i+1)); done; echo made $i"
        // Python's getrusage of its one child: ward's peak resident memory, in KiB.
        let measure = "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); "
            + "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
        let r = try BuildProducts.run("/usr/bin/python3", ["-c", measure, Fixture.ward, "sandbox", "--json", "--policies", TraceTests.policies,
                                                          "--workspace", ws, "shell", "--arg", "command=" + flood])
        let json = try #require(try? JSONValue.parse(r.stdout).objectValue, "\(r.stderr)")
        #expect(json["stdout"] == .string("made 100000\n"), "\(r.stderr)")
        let trace = try #require(json["trace"].flatMap(Trace.init(json:)))
        #expect(trace.effects.count == Trace.limit && trace.truncated)
        #expect(trace.dropped == 100_000 + 3 - Trace.limit, "the execs of sh and mkdir, the mkdir and 100,000 creates: \(trace.dropped ?? -1)")
        #expect(trace.lines.last?.contains("more not recorded") == true)
        let peakKiB = try #require(Int(r.stderr.split(separator: "\n").last.map(String.init) ?? ""), "\(r.stderr)")
        #expect(peakKiB < 150 * 1024, "ward's peak memory while 100,000 effects came: \(peakKiB) KiB")
    }

    /// An unprivileged ward traces its tools too, in a user namespace of their own, started
    /// directly or by a zygote in a delegated cgroup: it reads their memory as the owner of
    /// their user namespace.
    @Test(.enabled(if: geteuid() == 0, "drops to nobody"), arguments: [Mode.unprivileged, .unprivilegedCgroup])
    func anUnprivilegedWardTracesItsTools(mode: Mode) throws {
        let delegated = mode == .unprivilegedCgroup ? Harness.shared.delegated : nil
        if mode == .unprivilegedCgroup && delegated == nil { return }  // no v1 hierarchy to delegate here
        chmod(Fixture.testPolicies, 0o755)
        let ws = Fixture.workspace(owner: Mode.nobody)
        let r = try Fixture.cli(["sandbox", "--json", "--policies", Fixture.testPolicies, "--workspace", ws, "shell",
                                 "--arg", "command=echo hi > n.txt; mv n.txt m.txt"], uid: Mode.nobody, cgroup: delegated, cwd: "/tmp")
        let json = try #require(try? JSONValue.parse(r.stdout).objectValue, "\(r.stdout)\(r.stderr)")
        #expect(json["status"] == .string("succeeded"), "\(r.stdout)\(r.stderr)")
        let trace = try #require(json["trace"].flatMap(Trace.init(json:)))
        #expect(changes(trace) == ["create \(ws)/n.txt", "rename \(ws)/n.txt → \(ws)/m.txt"], "\(trace.lines)")
    }
}
