import Foundation
import Synchronization
import Testing
import WardTestSupport

@Suite("Test support: running the package's programs")
struct TestSupportTests {
    /// A child that writes more than a pipe holds to stderr before any stdout: read one
    /// stream to its end before the other, and the child and the test wait for each other.
    @Test func aChildFillingStderrBeforeStdoutDoesNotHangTheRunner() throws {
        let size = 2 << 20
        let result = Mutex<Result<(status: Int32, stdout: String, stderr: String), any Error>?>(nil)
        let child = Mutex<Int32>(0)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let r = Result {
                try BuildProducts.run("/bin/sh", ["-c", "head -c \(size) /dev/zero | tr '\\0' e >&2; echo out"]) { p in
                    child.withLock { $0 = p.processIdentifier }
                }
            }
            result.withLock { $0 = r }
            done.signal()
        }.start()
        guard done.wait(timeout: .now() + 60) == .success else {
            // Stopped, so the suite reports the hang instead of sharing it.
            let pid = child.withLock { $0 }
            if pid > 0 { kill(pid, SIGKILL) }
            Issue.record("the runner hung on a child that filled its stderr pipe")
            _ = done.wait(timeout: .now() + 10)
            return
        }
        let r = try #require(try result.withLock { $0 }?.get())
        #expect(r.status == 0)
        #expect(r.stdout == "out\n")
        #expect(r.stderr.utf8.count == size && r.stderr.utf8.allSatisfy { $0 == UInt8(ascii: "e") })
    }
}
