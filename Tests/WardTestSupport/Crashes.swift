import WardLedger

#if canImport(Glibc)
import Glibc
#endif

/// Begins `request` in a ledger handle of its own that then goes away without finishing:
/// a supervisor that died between `begin` and `finish`. Returns once the handle's owner lock
/// is free, as it is at once when a process dies: here a child forked meanwhile by another
/// test of this process holds a copy of the lock's descriptor until it execs.
public func beginThenCrash(ledgerAt path: String, _ request: BeginRequest) throws {
    let lock: String? = try {
        let ledger = try Ledger(path: path)
        _ = try ledger.begin(request)
        return ledger.ownerLockPath
    }()
    guard let lock else { return }
    _ = eventually {
        let fd = open(lock, O_RDONLY | O_CLOEXEC)
        defer { if fd >= 0 { close(fd) } }
        return fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) == 0
    }
}
