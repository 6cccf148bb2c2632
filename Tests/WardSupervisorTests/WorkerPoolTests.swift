import Dispatch
import Synchronization
import Testing
@testable import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

@Suite("WorkerPool: a thread per blocking request, up to a cap")
struct WorkerPoolTests {
    /// Runs `jobs` jobs that each block until `gather` of them run at once (or `patience` × 10 ms
    /// pass), as requests whose tools take a while; returns how many ran at once at most.
    /// With `gather` above the cap the patience is time in which no more than the cap may
    /// run (nothing to wait for); otherwise it is only a deadline.
    func peakConcurrency(jobs: Int, cap: Int, gather: Int, patience: Int = 200) -> (peak: Int, finished: Int) {
        let pool = WorkerPool(idleSeconds: 1, maximumThreads: cap)
        let state = Mutex((running: 0, peak: 0, finished: 0))
        let done = DispatchGroup()
        for _ in 0..<jobs {
            done.enter()
            pool.run {
                state.withLock { $0.running += 1; $0.peak = max($0.peak, $0.running) }
                for _ in 0..<patience where state.withLock({ $0.peak < gather }) { usleep(10_000) }
                state.withLock { $0.running -= 1; $0.finished += 1 }
                done.leave()
            }
        }
        done.wait()
        return state.withLock { ($0.peak, $0.finished) }
    }

    @Test func blockingJobsRunSideBySide() {
        let r = peakConcurrency(jobs: 16, cap: 512, gather: 16)
        #expect(r.finished == 16)
        #expect(r.peak == 16, "only \(r.peak) of 16 blocking jobs ran at once")
    }

    /// A connection's reader must run even when blocking requests hold every thread the cap
    /// allows, and ahead of requests already waiting: otherwise nothing reads the request
    /// that would let them finish.
    @Test func aReaderRunsPastTheCapAndAheadOfWaitingJobs() {
        let pool = WorkerPool(idleSeconds: 1, maximumThreads: 1)
        let release = DispatchSemaphore(value: 0)
        let order = Mutex<[String]>([])
        let done = DispatchGroup()
        done.enter()
        pool.run { release.wait(); done.leave() }  // holds the only thread
        done.enter()
        pool.run { order.withLock { $0.append("request") }; done.leave() }  // waits behind the cap
        let reader = DispatchSemaphore(value: 0)
        pool.run(alwaysStart: true) { order.withLock { $0.append("reader") }; reader.signal() }
        #expect(reader.wait(timeout: .now() + 5) == .success, "the reader waited behind the cap")
        #expect(order.withLock { $0 } == ["reader"], "\(order.withLock { $0 })")
        release.signal()
        done.wait()
        #expect(order.withLock { $0 } == ["reader", "request"])
    }

    @Test func pastTheCapJobsWaitForAThread() {
        let r = peakConcurrency(jobs: 12, cap: 3, gather: 4, patience: 30)
        #expect(r.finished == 12)
        #expect(r.peak == 3, "\(r.peak) jobs ran at once with a cap of 3")
    }
}
