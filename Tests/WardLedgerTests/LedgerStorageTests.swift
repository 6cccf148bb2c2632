import Foundation
import Testing
import WardCore
@testable import WardLedger
import Synchronization
import WardTestSupport

@Suite("Ledger: locked databases and full disks", .serialized, .sqliteFile)
struct LedgerStorageTests {
    @Test func aLockHeldByAnotherProcessGivesABoundedWaitThenAClearError() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path, busyTimeout: 0.3)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        holder.arguments = [path]
        let stdin = Pipe(), stdout = Pipe()
        holder.standardInput = stdin
        holder.standardOutput = stdout
        try holder.run()
        let said = OutputDrain(stdout.fileHandleForReading)
        defer {
            // sqlite3 exits at end of input; SIGKILL in case (a blocked SIGTERM may be inherited).
            try? stdin.fileHandleForWriting.close()
            kill(holder.processIdentifier, SIGKILL)
            holder.waitUntilExit()
        }
        // sqlite3 answers each statement as it runs it: "locked" means it holds the write lock.
        stdin.fileHandleForWriting.write(Data("BEGIN IMMEDIATE; INSERT INTO blobs VALUES (x'00', 0, x'');\nSELECT 'locked';\n".utf8))
        try #require(said.wait(for: "locked"), "sqlite3 never took the lock")
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
        stdin.fileHandleForWriting.write(Data("ROLLBACK;\nSELECT 'released';\n".utf8))
        try #require(said.wait(for: "released"), "sqlite3 never let go of the lock")
        let afterwards = try ledger.begin(request("c1"))
        #expect(afterwards.ticket != nil)
    }

    @Test(.enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
    func aFullDiskRefusesBeginKeepsEverythingRecordedAndFinishWaitsForSpace() throws {
        let mountPoint = makeTemporaryDirectory("ward-full")
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
        // Fills the disk: writes a file until the file system has no room left.
        let filler = mountPoint + "/filler"
        func fill() throws {
            FileManager.default.createFile(atPath: filler, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filler))
            defer { try? handle.close() }
            let block = Data(repeating: 0x55, count: 4096)
            while (try? handle.write(contentsOf: block)) != nil {}  // until ENOSPC
        }
        try fill()
        var refused = false
        for i in 0..<200 {
            do {
                let t = try ledger.begin(request("late-\(i)"))
                // The ledger's own writes fill what little room is left; a finish that finds
                // none fails the same way as the begin that ends the loop.
                if let ticket = t.ticket {
                    do { _ = try ledger.finish(ticket, outcome: outcome(String(repeating: "x", count: 20_000)), retryFor: 0) } catch {
                        #expect(error.code == .storage && error.message.contains("the disk is full"), "\(error)")
                    }
                }
            } catch {
                #expect(error.code == .storage && error.message.contains("the disk is full"), "\(error)")
                refused = true
                break
            }
        }
        #expect(refused, "the disk never filled")
        // Nothing recorded was lost, and the file still verifies.
        for id in recorded { #expect(try ledger.begin(request(id)).replayed != nil, "\(id) lost") }
        // A finish that cannot commit keeps trying; it succeeds once space returns.
        try FileManager.default.removeItem(atPath: filler)
        let t = try #require(try ledger.begin(request("after")).ticket)
        try fill()
        let finished = Mutex<Result<CallResult, LedgerError>?>(nil)
        let finisher = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            finisher.withLock { $0 = Processes.currentThread() }
            let r = Result { () throws(LedgerError) in try ledger.finish(t, outcome: outcome(String(repeating: "y", count: 300_000)), retryFor: 20) }
            finished.withLock { $0 = r }
            done.signal()
        }.start()
        // The space returns once finish has failed for want of it: it sleeps before retrying.
        #expect(eventually { finisher.withLock { $0 }.map(Processes.isSleeping) == true }, "finish never waited for space")
        #expect(finished.withLock { $0 } == nil, "finish returned on a full disk")
        try FileManager.default.removeItem(atPath: filler)
        #expect(done.wait(timeout: .now() + 30) == .success, "finish did not commit once space returned")
        let result = try #require(try finished.withLock { $0 }?.get())
        #expect(result.outcome.stdout.count == 300_000)
        #expect(try ledger.begin(request("after")).replayed?.outcome.stdout.count == 300_000)
        #expect(try ledger.verify().ok)
    }
}
