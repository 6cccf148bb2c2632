import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// An archived ledger (a read-only mount, no `-wal` or `-shm` beside it) is still audited:
/// SQLite cannot make the shared-memory file there, so ward reads it as immutable.
@Suite("Ledger: audits of read-only media", .serialized, .sqliteFile, .enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
struct ReadOnlyMediaTests {
    @Test func everyAuditReadsALedgerOnAReadOnlyMount() throws {
        let mountPoint = makeTemporaryDirectory("ward-ro")
        func mount(_ args: [String]) throws -> Int32 {
            let p = try Process.run(URL(fileURLWithPath: "/bin/mount"), arguments: args)
            p.waitUntilExit()
            return p.terminationStatus
        }
        try #require(try mount(["-t", "tmpfs", "-o", "size=4m", "tmpfs", mountPoint]) == 0)
        defer {
            let umount = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", mountPoint])
            umount?.waitUntilExit()
        }
        let path = mountPoint + "/ledger.sqlite"
        do {
            let ledger = try Ledger(path: path)
            let t = try #require(try ledger.begin(request("c1")).ticket)
            _ = try ledger.finish(t, outcome: outcome("archived"))
        }
        // Closed cleanly: SQLite removes the -wal and -shm files with the last connection.
        #expect(!FileManager.default.fileExists(atPath: path + "-shm"), "the -shm file outlived the ledger's handles")
        try #require(try mount(["-o", "remount,ro", mountPoint]) == 0)
        for args in [["ledger", "list"], ["ledger", "show", "r1", "c1"], ["ledger", "verify"], ["ledger", "export"], ["runs", "list"]] {
            let r = try Binaries.run(Binaries.ward, args + ["--ledger", path])
            #expect(r.status == 0, "ward \(args.joined(separator: " ")): \(r.stderr)")
            if args == ["ledger", "show", "r1", "c1"] { #expect(r.stdout.contains("archived")) }
        }
        // Writers get a clear error, not a hang or a crash.
        let resolve = try Binaries.run(Binaries.ward, ["ledger", "resolve", "r1", "c1", "--as", "executed", "--note", "x", "--ledger", path])
        #expect(resolve.status == 3 && resolve.stderr.contains("ward:"), "\(resolve)")
    }
}
