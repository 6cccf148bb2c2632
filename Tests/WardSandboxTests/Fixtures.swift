import Foundation
import Testing
import WardCore
import WardPolicy
import WardSandbox
import WardTestSupport

/// Paths and helpers shared by the sandbox suites.
enum Fixture {
    static var ward: String { BuildProducts.ward }
    static var hostile: String { BuildProducts.directory + "/ward-hostile" }
    static var repository: String { BuildProducts.repository }

    static var shippedPolicies: String { repository + "/policies" }

    /// The shipped policies plus `shell-short`: the shell tool's sandbox with small limits,
    /// so resource tests end in seconds; `shell-net` and `shell-loopback` with network; and
    /// `shell-trace`, allowed ptrace and the other calls that act on another process.
    /// `shell-pids`, which also lists the process-targeting syscalls and `unshare`.
    static let testPolicies: String = {
        let dir = temporaryDirectory("policies")
        for name in ["syscall-sets.toml", "tools.toml"] {
            try! FileManager.default.copyItem(atPath: shippedPolicies + "/" + name, toPath: dir + "/" + name)
        }
        var tools = try! String(contentsOfFile: shippedPolicies + "/tools.toml", encoding: .utf8)
        // Same defaults as the shipped file, a shell with tight limits, and a networked shell.
        let defaults = tools[tools.range(of: "\n[defaults]")!.lowerBound..<tools.range(of: "\n[tools.shell]")!.lowerBound]
        tools = String(defaults) + """
        [tools.shell-short]
        command = ["/bin/sh", "-c", "{command}"]
        write = ["{workspace}"]
        timeout = "2s"
        [tools.shell-short.limits]
        memory = "128M"
        processes = 64
        file-size = "8M"
        output = "64K"
        cpu = "1s"

        [tools.shell-net]
        command = ["/bin/sh", "-c", "{command}"]
        write = ["{workspace}"]
        network = "any"

        [tools.shell-trace]
        command = ["/bin/sh", "-c", "{command}"]
        write = ["{workspace}"]
        syscalls = ["ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "pidfd_open", "kcmp"]
        [tools.shell-pids]
        command = ["/bin/sh", "-c", "{command}"]
        write = ["{workspace}"]
        syscalls = ["setpriority", "sched_setaffinity", "ioprio_get", "ioprio_set", "unshare"]

        [tools.shell-loopback]
        command = ["/bin/sh", "-c", "{command}"]
        write = ["{workspace}"]
        network = "loopback"

        """
        try! tools.write(toFile: dir + "/test.toml", atomically: true, encoding: .utf8)
        return dir
    }()

    static func temporaryDirectory(_ label: String) -> String { makeTemporaryDirectory("ward-test-\(label)") }

    /// A fresh workspace holding a copy of ward-hostile, owned by `owner` when given.
    static func workspace(owner: uid_t? = nil) -> String {
        let dir = temporaryDirectory("ws")
        try! FileManager.default.copyItem(atPath: hostile, toPath: dir + "/ward-hostile")
        if let owner {
            chown(dir, owner, gid_t(owner))
            chown(dir + "/ward-hostile", owner, gid_t(owner))
        }
        return dir
    }

    static func sandbox(workspace: String, useCgroups: Bool = true, cgroupLayout: CgroupLayout? = nil, useZygotes: Bool = true,
                        maxLandlockABI: Int? = nil) throws -> Sandbox {
        try Sandbox(policies: try PolicyLoader.load(directory: testPolicies), workspace: workspace, useCgroups: useCgroups,
                    cgroupLayout: cgroupLayout, useZygotes: useZygotes, maxLandlockABI: maxLandlockABI)
    }

    /// Runs the ward CLI, optionally as another uid (via setpriv), from inside a delegated
    /// cgroup when given (as its uid), and collects its output. `environment` is added to
    /// the CLI's environment (never set in this process's).
    static func cli(_ arguments: [String], uid: uid_t? = nil, cgroup: DelegatedCgroup? = nil, cwd: String? = nil,
                    environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        if let cgroup {
            let (program, argv) = cgroup.command(ward, arguments)
            return try BuildProducts.run(program, argv, in: cwd, environment: environment)
        }
        guard let uid else { return try BuildProducts.run(ward, arguments, in: cwd, environment: environment) }
        return try BuildProducts.run("/usr/bin/setpriv", ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--inh-caps=-all", "--", ward] + arguments,
                                     in: cwd, environment: environment)
    }

    /// Processes whose command line contains `token` (to find escaped daemons).
    static func processes(containing token: String) -> [Int32] { Processes.withCommandLine(containing: token) }
}

extension ToolOutcome {
    var out: String { String(decoding: stdout, as: UTF8.self) }
    var err: String { String(decoding: stderr, as: UTF8.self) }
}
