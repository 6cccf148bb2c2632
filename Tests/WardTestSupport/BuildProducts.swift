import Foundation

/// Where the test suites find what SwiftPM built (`ward`, `ward-hostile`, `ward-torture`) and
/// the repository's own files, and how they run those programs.
public enum BuildProducts {
    /// The directory of the test bundle, where SwiftPM also puts the package's executables.
    public static let directory: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var parts = exe.split(separator: "/", omittingEmptySubsequences: false)
        while let last = parts.last, !last.hasSuffix(".xctest") && parts.count > 1 { parts.removeLast() }
        parts.removeLast()
        return parts.joined(separator: "/")
    }()

    /// The checkout this file belongs to.
    public static let repository: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/WardTestSupport/BuildProducts.swift
        return parts.joined(separator: "/")
    }()

    public static var ward: String { directory + "/ward" }

    /// Runs a program to completion with no standard input; its status, stdout and stderr.
    /// `environment` is added to this process's (never set in it: suites run in parallel,
    /// and the environment is the whole process's). `started` sees the running process (to
    /// signal it from outside, as a crash test does) while its output is already drained.
    @discardableResult
    public static func run(_ path: String, _ arguments: [String], in directory: String? = nil, environment: [String: String] = [:],
                           started: ((Process) -> Void)? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Both at once: read one to its end first, and a child that fills the other waits forever.
        let stdout = OutputDrain(out.fileHandleForReading), stderr = OutputDrain(err.fileHandleForReading)
        started?(p)
        p.waitUntilExit()
        return (p.terminationStatus, stdout.text(), stderr.text())
    }
}
