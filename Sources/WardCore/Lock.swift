#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex. ward uses this rather than the standard library's
/// `Mutex` because on Linux that one locks inside uninstrumented library code, so
/// ThreadSanitizer (`Scripts/test --sanitize`) cannot see it and would report every access it
/// guards as a race, hiding any real one. Uncontended, both cost one atomic exchange.
public final class Lock<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
