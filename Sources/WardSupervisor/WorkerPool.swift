import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs each job on a thread of its own, reusing idle threads. A request blocks its thread
/// for as long as its tool runs (seconds, minutes), so a pool as wide as the CPU count — what
/// libdispatch's global queue is on Linux — would let two slow tools hold up every other call
/// of every agent. Width is bounded by the callers (64 in-flight requests per connection) and
/// by `maximumThreads` across all of them (past it, jobs wait for a thread; a connection's
/// reader never does, or idle connections could hold every thread); threads idle for
/// `idleSeconds` exit.
final class WorkerPool: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Guarded by `mutex`.
    private var queue: [@Sendable () -> Void] = []
    private var idle = 0
    private var threads = 0
    private let idleSeconds: Int
    let maximumThreads: Int

    init(idleSeconds: Int = 10, maximumThreads: Int = 512) {
        self.idleSeconds = idleSeconds
        self.maximumThreads = maximumThreads
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    deinit {
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(mutex)
        wake.deallocate()
        mutex.deallocate()
    }

    /// Runs `job` on an idle thread, or a new one; past the cap, it waits for a thread unless
    /// `alwaysStart` (a job that must not wait behind others: a connection's reader).
    func run(alwaysStart: Bool = false, _ job: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(mutex)
        if alwaysStart { queue.insert(job, at: 0) } else { queue.append(job) }
        // Every queued job needs a waiting thread to take it; otherwise start one, up to the cap.
        let enoughIdle = idle >= queue.count
        if enoughIdle { pthread_cond_signal(wake) }
        let start = !enoughIdle && (threads < maximumThreads || alwaysStart)
        if start { threads += 1 }
        pthread_mutex_unlock(mutex)
        if start {
            let thread = Thread { [self] in work() }
            thread.name = "ward-request"
            thread.start()
        }
    }

    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            while queue.isEmpty {
                var deadline = timespec()
                clock_gettime(CLOCK_REALTIME, &deadline)
                deadline.tv_sec += idleSeconds
                idle += 1
                let rc = pthread_cond_timedwait(wake, mutex, &deadline)
                idle -= 1
                if rc == ETIMEDOUT && queue.isEmpty {
                    threads -= 1
                    pthread_mutex_unlock(mutex)
                    return
                }
            }
            let job = queue.removeFirst()
            pthread_mutex_unlock(mutex)
            job()
            pthread_mutex_lock(mutex)
            // A thread started past the cap for a reader does not stay to take capped jobs.
            if threads > maximumThreads {
                threads -= 1
                pthread_mutex_unlock(mutex)
                return
            }
        }
    }
}
