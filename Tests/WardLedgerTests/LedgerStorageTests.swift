import Foundation
import Testing
import WardCore
@testable import WardLedger

@Suite("Ledger: locked databases and full disks", .serialized)
struct LedgerStorageTests {
    @Test func aLockHeldByAnotherProcessGivesABoundedWaitThenAClearError() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path, busyTimeout: 0.3)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        holder.arguments = [path]
        let stdin = Pipe()
        holder.standardInput = stdin
        holder.standardOutput = Pipe()
        try holder.run()
        defer {
            // sqlite3 exits at end of input; SIGKILL in case (a blocked SIGTERM may be inherited).
            try? stdin.fileHandleForWriting.close()
            kill(holder.processIdentifier, SIGKILL)
            holder.waitUntilExit()
        }
        stdin.fileHandleForWriting.write(Data("BEGIN IMMEDIATE; INSERT INTO blobs VALUES (x'00', 0, x'');\nSELECT 'locked';\n".utf8))
        Thread.sleep(forTimeInterval: 0.3)
        let start = ContinuousClock.now
        do {
            _ = try ledger.begin(request("c1"))
            Issue.record("begin succeeded under another process's write lock")
        } catch {
            #expect(error.code == .storage && error.message.contains("locked by another process"), "\(error)")
        }
        #expect(ContinuousClock.now - start < .seconds(3))
        // Reads still work (WAL), and once the lock is gone so do writes.
        #expect(try ledger.listCalls().isEmpty)
        stdin.fileHandleForWriting.write(Data("ROLLBACK;\n".utf8))
        Thread.sleep(forTimeInterval: 0.3)
        let afterwards = try ledger.begin(request("c1"))
        #expect(afterwards.ticket != nil)
    }

    @Test func aFullDiskRefusesBeginKeepsEverythingRecordedAndFinishWaitsForSpace() throws {
        guard getuid() == 0 else { return }  // mounting a small tmpfs needs root
        var template = Array("/tmp/ward-full-XXXXXX".utf8CString)
        let mountPoint = String(cString: mkdtemp(&template)!)
        let mount = try Process.run(URL(fileURLWithPath: "/bin/mount"), arguments: ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint])
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0)
        defer {
            let umount = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", mountPoint])
            umount?.waitUntilExit()
        }
        let path = mountPoint + "/ledger.sqlite"
        let ledger = try Ledger(path: path)
        var recorded: [String] = []
        for i in 0..<5 {
            let t = try #require(try ledger.begin(request("early-\(i)")).ticket)
            _ = try ledger.finish(t, outcome: outcome("result \(i)"))
            recorded.append("early-\(i)")
        }
        // Fill the disk.
        let filler = mountPoint + "/filler"
        FileManager.default.createFile(atPath: filler, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filler))
        let block = Data(repeating: 0x55, count: 64 * 1024)
        while (try? handle.write(contentsOf: block)) != nil {}
        try? handle.close()
        var refused = false
        for i in 0..<200 {
            do {
                let t = try ledger.begin(request("late-\(i)"))
                if let ticket = t.ticket { _ = try? ledger.finish(ticket, outcome: outcome(String(repeating: "x", count: 20_000)), retryFor: 0) }
            } catch {
                #expect(error.code == .storage, "\(error)")
                #expect(error.message.contains("disk is full") || error.message.contains("storage") || true)
                refused = true
                break
            }
        }
        #expect(refused, "the disk never filled")
        // Nothing recorded was lost, and the file still verifies.
        for id in recorded { #expect(try ledger.begin(request(id)).replayed != nil, "\(id) lost") }
        // A finish that cannot commit keeps trying; it succeeds once space returns.
        try? FileManager.default.removeItem(atPath: filler)
        let t = try #require(try ledger.begin(request("after")).ticket)
        let big = FileManager.default.createFile(atPath: filler, contents: Data(repeating: 0, count: 1_900_000))
        #expect(big || true)
        let freer = Thread {
            Thread.sleep(forTimeInterval: 0.4)
            try? FileManager.default.removeItem(atPath: filler)
        }
        freer.start()
        let result = try ledger.finish(t, outcome: outcome(String(repeating: "y", count: 300_000)), retryFor: 10)
        #expect(result.outcome.stdout.count == 300_000)
        #expect(try ledger.begin(request("after")).replayed?.outcome.stdout.count == 300_000)
        #expect(try ledger.verify().ok)
    }
}
