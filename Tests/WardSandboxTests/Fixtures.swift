import Foundation
import Testing
import WardCore
import WardPolicy
import WardSandbox

/// Paths and helpers shared by the sandbox suites.
enum Fixture {
    /// The directory of the test binary, where SwiftPM also puts `ward` and `ward-hostile`.
    static let buildDirectory: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var parts = exe.split(separator: "/", omittingEmptySubsequences: false)
        while let last = parts.last, !last.hasSuffix(".xctest") && parts.count > 1 { parts.removeLast() }
        parts.removeLast()
        return parts.joined(separator: "/")
    }()

    static var ward: String { buildDirectory + "/ward" }
    static var hostile: String { buildDirectory + "/ward-hostile" }

    static let repository: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    static var shippedPolicies: String { repository + "/policies" }

    /// The shipped policies plus `shell-short`: the shell tool's sandbox with small limits,
    /// so resource tests end in seconds.
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

        [tools.shell-loopback]
        command = ["/bin/sh", "-c", "{command}"]
        write = ["{workspace}"]
        network = "loopback"

        """
        try! tools.write(toFile: dir + "/test.toml", atomically: true, encoding: .utf8)
        return dir
    }()

    static func temporaryDirectory(_ label: String) -> String {
        var template = Array("/tmp/ward-test-\(label)-XXXXXX".utf8CString)
        return String(cString: mkdtemp(&template)!)
    }

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

    static func sandbox(workspace: String, useCgroups: Bool = true, cgroupLayout: CgroupLayout? = nil, useZygotes: Bool = true) throws -> Sandbox {
        try Sandbox(policies: try PolicyLoader.load(directory: testPolicies), workspace: workspace, useCgroups: useCgroups,
                    cgroupLayout: cgroupLayout, useZygotes: useZygotes)
    }

    /// Runs the ward CLI, optionally as another uid (via setpriv), and collects its output.
    static func cli(_ arguments: [String], uid: uid_t? = nil, cwd: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        if let uid {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--inh-caps=-all", "--", ward] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: ward)
            process.arguments = arguments
        }
        if let cwd { process.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }

    /// Processes whose command line contains `token` (to find escaped daemons).
    static func processes(containing token: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
            let text = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            guard text.contains(token) else { return nil }
            // Zombies have an empty cmdline and so never match: only live processes count.
            return pid
        }
    }
}

extension ToolOutcome {
    var out: String { String(decoding: stdout, as: UTF8.self) }
    var err: String { String(decoding: stderr, as: UTF8.self) }
}
