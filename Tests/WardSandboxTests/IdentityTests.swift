import Foundation
import Testing
import WardCore
import WardPolicy
import WardSandbox
import WardTestSupport

/// A root ward's tools run as an unprivileged identity: never uid 0, no setuid or setgid
/// bit ever set, root-only files unreadable, the workspace theirs (so an operator's git
/// refuses what a tool wrote there). An unprivileged ward's run as a subordinate uid of its
/// user, with the same effect on the operator's git.
@Suite("Identity: tools never run as root nor as the operator", .serialized, .enabled(if: geteuid() == 0, "needs root"))
struct IdentityTests {
    func shell(_ sandbox: Sandbox, _ command: String) throws -> ToolOutcome {
        try sandbox.run(tool: "shell", arguments: .object(["command": .string(command)]))
    }

    func owner(_ path: String) -> (uid: UInt32, gid: UInt32)? {
        var st = stat()
        return lstat(path, &st) == 0 ? (st.st_uid, st.st_gid) : nil
    }

    @Test func toolsRunAsTheToolUserInAWorkspaceThatIsTheirs() throws {
        let ws = Fixture.workspace()
        try "left by the operator\n".write(toFile: ws + "/left.txt", atomically: false, encoding: .utf8)
        let sandbox = try Fixture.sandbox(workspace: ws)
        let identity = try #require(sandbox.toolIdentity)
        #expect(identity.uid != 0 && identity.gid != 0)
        for useZygotes in [true, false] {
            let s = useZygotes ? sandbox : try Fixture.sandbox(workspace: ws, useZygotes: false)
            let o = try shell(s, "id -u; id -g; id -G; echo more >> left.txt; echo new > made-\(useZygotes).txt")
            #expect(o.status == .succeeded, "\(o.err)")
            #expect(o.out == "\(identity.uid)\n\(identity.gid)\n\(identity.gid)\n", "\(o.out)")
            #expect(owner(ws + "/made-\(useZygotes).txt").map { $0.uid == identity.uid && $0.gid == identity.gid } == true)
        }
        // The operator (root here) still reads and changes what tools made.
        #expect(try String(contentsOfFile: ws + "/left.txt", encoding: .utf8) == "left by the operator\nmore\nmore\n")
        #expect(owner(ws)?.uid == identity.uid && owner(ws + "/left.txt")?.uid == identity.uid)
    }

    /// The workspace's parents (a test's 0700 temporary directory) get a search-only ACL
    /// entry for the tool user; nothing above them is given to it.
    @Test func aWorkspaceUnderAPrivateDirectoryIsReachable() throws {
        let parent = makeTemporaryDirectory("ward-identity-private")
        chmod(parent, 0o700)
        let sandbox = try Fixture.sandbox(workspace: parent + "/ws")
        let o = try shell(sandbox, "pwd; ls \(parent)/ws >/dev/null && echo listed; ls \(parent) 2>&1 >/dev/null | grep -c 'Permission denied'")
        #expect(o.out == "\(parent)/ws\nlisted\n1\n", "\(o.out) \(o.err)")
        #expect(owner(parent)?.uid == 0)
    }

    /// Run as `uid`: the euid `ward-hostile euid` at `path` reports.
    func euid(of path: String, runAs uid: uid_t) throws -> String {
        let r = try BuildProducts.run("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--", path, "euid"])
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func setuidAndSetgidBitsAreNeverSet() throws {
        let ws = Fixture.workspace()
        try FileManager.default.copyItem(atPath: Fixture.hostile, toPath: ws + "/planted")
        let sandbox = try Fixture.sandbox(workspace: ws)
        let identity = try #require(sandbox.toolIdentity)
        let attempts = """
            chmod 4755 planted; chmod u+s planted
            cp /bin/true t; chmod 4755 t; chmod g+s t; chmod u+s,g+s t; install -m 6755 /bin/true u
            python3 -c 'import os; os.open("v", os.O_CREAT | os.O_WRONLY, 0o4755)'
            python3 -c 'import os; os.mknod("w", 0o102755)'
            mkdir -m 2755 d
            find . -perm /6000
            """
        let o = try shell(sandbox, attempts)
        #expect(o.out.isEmpty, "files with setuid or setgid bits: \(o.out)")
        #expect(o.err.contains("Operation not permitted"), "\(o.err)")
        // Positive control: outside the sandbox the same user sets the bits.
        let control = makeTemporaryDirectory("ward-identity-control")
        chown(control, identity.uid, identity.gid)
        let outside = try BuildProducts.run("/usr/bin/setpriv", ["--reuid=\(identity.uid)", "--regid=\(identity.gid)", "--clear-groups", "/bin/sh", "-c",
                                                                 attempts + " 2>/dev/null"], in: control)
        #expect(outside.stdout.contains("./t") && outside.stdout.contains("./v"), "the control set no bit: \(outside.stdout)")
        // The binary a tool tried to make setuid, run by another user, runs as that user;
        // the control's, which the tool user did make setuid outside ward, as the tool user.
        let other = Mode.nobody
        #expect(try euid(of: ws + "/planted", runAs: other) == "euid: \(other)")
        try FileManager.default.copyItem(atPath: Fixture.hostile, toPath: control + "/planted")
        chown(control + "/planted", identity.uid, identity.gid)
        let made = try BuildProducts.run("/usr/bin/setpriv", ["--reuid=\(identity.uid)", "--regid=\(identity.gid)", "--clear-groups",
                                                              "/bin/chmod", "4755", "planted"], in: control)
        #expect(made.status == 0, "\(made.stderr)")
        #expect(try euid(of: control + "/planted", runAs: other) == "euid: \(identity.uid)")
    }

    @Test func rootOnlyFilesInReadRootsAreUnreadable() throws {
        let data = makeTemporaryDirectory("ward-identity-read")
        chmod(data, 0o755)
        try "public\n".write(toFile: data + "/public", atomically: false, encoding: .utf8)
        try "secret\n".write(toFile: data + "/secret", atomically: false, encoding: .utf8)
        chmod(data + "/secret", 0o600)
        let policies = makeTemporaryDirectory("ward-identity-policies")
        try FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/syscall-sets.toml", toPath: policies + "/syscall-sets.toml")
        try """
            [tools.read]
            command = ["/bin/sh", "-c", "cat \(data)/public; cat \(data)/secret"]
            syscalls = ["@system-service"]
            read = ["/usr", "/bin", "/lib", "?/lib64", "/etc/ld.so.cache", "\(data)"]
            """.write(toFile: policies + "/read.toml", atomically: false, encoding: .utf8)
        let sandbox = try Sandbox(policies: try PolicyLoader.load(directory: policies), workspace: Fixture.workspace())
        let o = try sandbox.run(tool: "read", arguments: .object([:]))
        #expect(o.out == "public\n" && o.err.contains("Permission denied"), "\(o.out) \(o.err)")
        #expect(try String(contentsOfFile: data + "/secret", encoding: .utf8) == "secret\n")  // the control: it is there
    }

    @Test func theToolUserIsChosenAndNeverRoot() throws {
        let ws = Fixture.workspace()
        let chosen = try Sandbox(policies: try PolicyLoader.load(directory: Fixture.testPolicies), workspace: ws, toolUser: "54321:54322")
        #expect(try shell(chosen, "id -u; id -g").out == "54321\n54322\n")
        #expect(owner(ws)?.uid == 54321)
        for refused in ["0", "root", "54321:0", "no-such-user-here", "12:x"] {
            #expect(throws: SandboxError.self, "\(refused)") {
                _ = try Sandbox(policies: try PolicyLoader.load(directory: Fixture.testPolicies), workspace: Fixture.workspace(), toolUser: refused)
            }
        }
        // The policies' default, and the command line over it.
        let policies = makeTemporaryDirectory("ward-identity-default")
        for name in ["syscall-sets.toml", "tools.toml"] {
            try FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/" + name, toPath: policies + "/" + name)
        }
        try "[defaults]\nuser = \"43210\"\n".write(toFile: policies + "/user.toml", atomically: false, encoding: .utf8)
        let set = try PolicyLoader.load(directory: policies)
        #expect(try shell(try Sandbox(policies: set, workspace: Fixture.workspace()), "id -u").out == "43210\n")
        #expect(try shell(try Sandbox(policies: set, workspace: Fixture.workspace(), toolUser: "43211"), "id -u").out == "43211\n")
        let cli = try Fixture.cli(["sandbox", "--policies", policies, "--workspace", Fixture.workspace(), "--tool-user", "root", "shell", "--arg", "command=id"])
        #expect(cli.status != 0 && cli.stderr.contains("never run as root"), "\(cli.stderr)")
    }

    @Test func aToolUserIsSetForTheWholeDirectoryOnly() throws {
        let policies = makeTemporaryDirectory("ward-identity-bad")
        try FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/syscall-sets.toml", toPath: policies + "/syscall-sets.toml")
        try "[tools.t]\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n".write(toFile: policies + "/t.toml", atomically: false, encoding: .utf8)
        let error = #expect(throws: PolicyError.self) { try PolicyLoader.load(directory: policies) }
        #expect(error?.diagnostics.first.map { "\($0.line):\($0.column) \($0.message)" }?.hasPrefix("3:1 user is chosen for all tools at once") == true,
                "\(String(describing: error?.diagnostics))")
    }

    /// An unprivileged ward cannot choose: its tools run as its user's last subordinate uid,
    /// or, for a user without any, as its own uid (and it says so).
    @Test func anUnprivilegedWardsToolsRunAsASubordinateUID() throws {
        let ws = makeTemporaryDirectory("ward-identity-unprivileged")
        chown(ws, 65534, 65534)
        chmod(Fixture.testPolicies, 0o755)  // readable by nobody
        let o = try Fixture.cli(["sandbox", "--policies", Fixture.testPolicies, "--workspace", ws + "/w", "--tool-user", "4321", "shell", "--arg", "command=id -u"],
                                uid: 65534, cwd: ws)
        #expect(o.status != 0 && o.stderr.contains("only a root ward chooses who tools run as"), "\(o.stderr)")
        let sub = try subordinateUID(of: "nobody")
        let plain = try Fixture.cli(["sandbox", "--policies", Fixture.testPolicies, "--workspace", ws + "/w", "shell", "--arg",
                                     "command=id -u; id -G; echo made > made"], uid: 65534, cwd: ws)
        #expect(plain.stdout == "\(sub)\n\(sub)\n", "\(plain.stderr)")
        #expect(owner(ws + "/w/made")?.uid == sub && owner(ws + "/w")?.uid == sub)
        // The operator keeps reading, writing and removing what tools made (an ACL entry).
        let byOperator = try BuildProducts.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                                                                  "echo more >> w/made && cat w/made && rm w/made && mkdir w/mine && echo ok"], in: ws)
        #expect(byOperator.stdout == "made\nmore\nok\n", "\(byOperator.stderr)")

        // What lies outside stays outside: a hard link and a symlink to the operator's files
        // elsewhere are not given, a set-group-ID directory loses the bit, and a directory a
        // tool shut (chmod 700) is the operator's to use again at the next start.
        let home = makeTemporaryDirectory("ward-identity-home")
        chown(home, 65534, 65534)
        try "secret\n".write(toFile: home + "/bashrc", atomically: false, encoding: .utf8)
        chown(home + "/bashrc", 65534, 65534)
        link(home + "/bashrc", ws + "/w/linked")
        symlink(home, ws + "/w/away")
        mkdir(ws + "/w/shared", 0o2775)
        chown(ws + "/w/shared", 65534, 65534)
        chmod(ws + "/w/shared", 0o2775)
        let shut = try Fixture.cli(["sandbox", "--policies", Fixture.testPolicies, "--workspace", ws + "/w", "shell", "--arg",
                                    "command=mkdir shut; echo x > shut/f; chmod 700 shut"], uid: 65534, cwd: ws)
        #expect(shut.status == 0, "\(shut.stderr)")
        _ = try Fixture.cli(["sandbox", "--policies", Fixture.testPolicies, "--workspace", ws + "/w", "shell", "--arg", "command=true"], uid: 65534, cwd: ws)
        #expect(owner(home)?.uid == 65534 && owner(home + "/bashrc")?.uid == 65534 && owner(ws + "/w/linked")?.uid == 65534)
        var st = stat()
        #expect(lstat(ws + "/w/shared", &st) == 0 && st.st_mode & 0o2000 == 0 && st.st_uid == sub)
        let reopened = try BuildProducts.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/cat", "w/shut/f"], in: ws)
        #expect(reopened.stdout == "x\n", "\(reopened.stderr)")

        // A uid with no subordinate ids: its tools keep its uid, and ward warns.
        let bare: uid_t = 61_234
        let ws2 = makeTemporaryDirectory("ward-identity-no-subuid")
        chown(ws2, bare, bare)
        let kept = try Fixture.cli(["sandbox", "--policies", Fixture.testPolicies, "--workspace", ws2 + "/w", "shell", "--arg", "command=id -u"], uid: bare, cwd: ws2)
        #expect(kept.stdout == "\(bare)\n", "\(kept.stderr)")
        #expect(kept.stderr.contains("tools run as ward's own uid \(bare) (uid \(bare) has no subordinate uids in /etc/subuid)"), "\(kept.stderr)")
        // `ward doctor` and `ward policy explain` say which.
        for (uid, said) in [(uid_t(65534), "tools run as uid \(sub) "), (bare, "tools keep ward's uid, in a user namespace of their own (uid \(bare) has no")] {
            let doctor = try Fixture.cli(["doctor"], uid: uid, cwd: ws)
            let explain = try Fixture.cli(["policy", "explain", "--policies", Fixture.testPolicies, "shell"], uid: uid, cwd: ws)
            #expect(doctor.stdout.contains(said) && explain.stdout.contains(said), "\(doctor.stdout)\n\(explain.stdout)")
        }
    }

    /// Nothing a tool writes makes the operator's git run code in the workspace: the
    /// repository is the tool identity's (the operator's own was given to it when ward
    /// started): a root ward's tool user's, an unprivileged ward's subordinate uid's. git
    /// refuses a repository another user owns. The control plants the same configuration
    /// in a repository of the operator's outside ward, where each vector fires.
    @Test(arguments: [0, Mode.nobody])
    func theOperatorsGitRunsNothingAToolWrote(operatorUID: uid_t) throws {
        /// Runs a shell command as the operator.
        func sh(_ command: String, in dir: String, environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
            let asOperator = operatorUID == 0 ? [] : ["/usr/bin/setpriv", "--reuid=\(operatorUID)", "--regid=\(operatorUID)", "--clear-groups"]
            let argv = asOperator + ["/bin/sh", "-c", command]
            return try BuildProducts.run(argv[0], Array(argv.dropFirst()), in: dir, environment: environment)
        }
        func directory(_ prefix: String) -> String {
            let dir = makeTemporaryDirectory(prefix)
            chown(dir, operatorUID, operatorUID)
            return dir
        }
        func marksDirectory() -> String {
            let dir = makeTemporaryDirectory("ward-identity-marks")
            chmod(dir, 0o777)
            return dir
        }
        func plant(_ marks: String) -> String {
            """
            set -e
            cd repo
            git config core.fsmonitor "touch \(marks)/fsmonitor; false"
            git config core.pager "touch \(marks)/pager; cat"
            git config core.sshCommand "touch \(marks)/ssh; false"
            printf '#!/bin/sh\\ntouch \(marks)/hook\\n' > .git/hooks/pre-commit && chmod 755 .git/hooks/pre-commit
            cd ../repo2
            mkdir -p hooks && printf '#!/bin/sh\\ntouch \(marks)/hookspath\\n' > hooks/pre-commit && chmod 755 hooks/pre-commit
            git config core.hooksPath hooks
            """
        }
        func makeRepos(in dir: String) throws {
            let made = try sh("for r in repo repo2; do git init -q $r && git -C $r -c user.name=o -c user.email=o@x commit -q --allow-empty -m first; done",
                              in: dir, environment: ["HOME": dir])
            try #require(made.status == 0, "\(made.stderr)")
        }
        /// What the operator does in a repository: each may run what was planted.
        func operate(in dir: String) throws {
            let env = ["HOME": dir, "GIT_CONFIG_NOSYSTEM": "1"]
            for command in ["git -C repo status", "script -qec 'git -C repo log' /dev/null", "git -C repo ls-remote ssh://localhost/x",
                            "git -C repo -c user.name=o -c user.email=o@x commit -q --allow-empty -m op",
                            "git -C repo2 -c user.name=o -c user.email=o@x commit -q --allow-empty -m op"] {
                _ = try sh(command + " >/dev/null 2>&1", in: dir, environment: env)
            }
        }
        func fired(_ marks: String) -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: marks)) ?? []).sorted()
        }

        // Control: the operator's own repository, written by the operator.
        let marks = marksDirectory()
        let control = directory("ward-identity-git-control")
        try makeRepos(in: control)
        let planted = try sh(plant(marks), in: control)
        try #require(planted.status == 0, "\(planted.stderr)")
        try operate(in: control)
        #expect(fired(marks) == ["fsmonitor", "hook", "hookspath", "pager", "ssh"], "the control: \(fired(marks))")

        // In ward: the operator's repositories, made before ward started, then a tool plants.
        let toolMarks = marksDirectory()
        let ws = Fixture.workspace(owner: operatorUID == 0 ? nil : operatorUID)
        try makeRepos(in: ws)
        if operatorUID == 0 {
            let o = try shell(try Fixture.sandbox(workspace: ws), plant(toolMarks))
            #expect(o.status == .succeeded, "\(o.err)")
        } else {
            chmod(Fixture.testPolicies, 0o755)  // readable by the operator
            let o = try Fixture.cli(["sandbox", "--policies", Fixture.testPolicies, "--workspace", ws, "shell", "--arg", "command=" + plant(toolMarks)],
                                    uid: operatorUID, cwd: ws)
            #expect(o.status == 0, "\(o.stderr)")
            #expect(owner(ws + "/repo/.git/config")?.uid == (try subordinateUID(of: "nobody")))
        }
        try operate(in: ws)
        #expect(fired(toolMarks).isEmpty, "the operator's git ran what a tool wrote: \(fired(toolMarks))")
        let refused = try sh("git -C repo status", in: ws, environment: ["HOME": ws, "GIT_CONFIG_NOSYSTEM": "1"])
        #expect(refused.status != 0 && refused.stderr.contains("dubious ownership"), "\(refused.stderr)")
    }
}
