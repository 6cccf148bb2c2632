import CWardOS

#if canImport(Glibc)
import Glibc
#endif

/// Waiting for a short call without sleeping. A call started by a zygote and running alone
/// is waited for by polling its pipes at SCHED_IDLE for up to `nanoseconds` (the tool, or
/// anything else runnable, always goes first); a short tool (a `cat`, a `git status`) ends
/// within it. A thread that slept instead pays a wake-up, and on a virtual machine an idle
/// virtual CPU is slow to wake and runs slower for a while after: every step of the next
/// call, the ledger's commits included, measured slower. What it is worth is measured by
/// `Scripts/bench` in the same run (docs/performance.md, "sandboxed spawn … without the
/// idle spin").
///
/// Only when a CPU is left for it: the call runs alone, and no more tasks are runnable than
/// there are CPUs (`/proc/loadavg`). On a saturated machine a SCHED_IDLE thread can wait
/// tens of ms for its turn (measured: 50–68 ms worst cases under two CPU hogs, 17–25 ms
/// without spinning). Not after a direct spawn, where it made calls slower (408 to 718 µs a
/// spawn). Off on one CPU, and where a thread could not come back from SCHED_IDLE.
struct IdleSpin: Sendable {
    let nanoseconds: UInt64

    /// The spin this machine allows; nil where it must not be used.
    static let available: IdleSpin? = cpus > 1 && ward_can_idle_and_return() == 1 ? IdleSpin(nanoseconds: 300_000) : nil

    static let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))

    /// Until when a call's wait may spin, from `now` (0: it must not).
    /// - Parameters:
    ///   - alone: no other call runs in this sandbox.
    ///   - byZygote: the call was started by its tool's zygote.
    func deadline(now: UInt64, alone: Bool, byZygote: Bool) -> UInt64 {
        guard alone && byZygote && IdleSpin.spareCPU() else { return 0 }
        return now + nanoseconds
    }

    /// Whether a CPU is idle besides the ones this call uses.
    static func spareCPU() -> Bool {
        let runnable = ward_runnable_tasks()
        return runnable >= 0 && runnable <= cpus
    }
}
