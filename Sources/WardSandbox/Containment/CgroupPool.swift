import WardCore
import CWardSpawn
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One call's cgroups: one directory per usable hierarchy, reused across calls (mkdir and
/// rmdir are kept off the hot path). The child joins by writing "0" (itself) to each join
/// file, opened here, before it can fork: `tasks` on v1, `cgroup.procs` on v2.
///
/// Why `tasks` on v1: moving a whole process (`cgroup.procs`) takes the kernel's global
/// threadgroup lock for writing, which waits for an RCU grace period unless another move
/// happened in the last few milliseconds: 6–14 ms for the first call after any idle time,
/// that is for nearly every call of an agent that thinks between calls. Moving the calling
/// thread itself skips that lock, and the child is single-threaded, so it moves whole.
final class CgroupSlot: @unchecked Sendable {
    // @unchecked: a slot is owned by one call at a time, handed over through the pool's lock.
    let directories: [String]
    let joinFDs: [Int32]
    /// The directory whose membership decides "is the call's tree gone" and how it is killed.
    let primary: String
    let primaryIsV2: Bool
    let pidsMax: String?
    let memoryMax: String?
    var applied: (pids: UInt64?, memory: UInt64?) = (nil, nil)

    init(directories: [String], joinFDs: [Int32], primary: String, primaryIsV2: Bool, pidsMax: String?, memoryMax: String?) {
        self.directories = directories
        self.joinFDs = joinFDs
        self.primary = primary
        self.primaryIsV2 = primaryIsV2
        self.pidsMax = pidsMax
        self.memoryMax = memoryMax
    }

    /// Writes the process and memory limits this slot can enforce; returns which it enforces.
    func apply(processes: UInt64?, memory: UInt64?) -> (processes: Bool, memory: Bool) {
        var enforced = (processes: false, memory: false)
        if let pidsMax {
            let want = processes
            if applied.pids != want || want == nil {
                if writeSmallFile(pidsMax, want.map(String.init) ?? "max") == 0 { applied.pids = want }
            }
            enforced.processes = processes != nil && applied.pids == processes
        }
        if let memoryMax {
            let want = memory
            if applied.memory != want || want == nil {
                let text = want.map(String.init) ?? (memoryMax.hasSuffix("limit_in_bytes") ? "-1" : "max")
                if writeSmallFile(memoryMax, text) == 0 { applied.memory = want }
            }
            enforced.memory = memory != nil && applied.memory == memory
        }
        return enforced
    }

    /// `cgroup.procs` of the primary hierarchy kept open, for one pread per check on the hot
    /// path. Only on v2: v1 serves cgroup.procs from a pidlist cached per open file for about
    /// a second, so a kept fd would return a stale list and miss a fresh daemon.
    private lazy var membersFD: Int32 = primaryIsV2 ? open(primary + "/cgroup.procs", O_RDONLY | O_CLOEXEC) : -1

    /// The pids still in the call's cgroup.
    func members() -> [pid_t] {
        guard membersFD >= 0 else {
            return (readSmallFile(primary + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { pid_t($0) }
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var text: [UInt8] = []
        var offset: off_t = 0
        while true {
            let n = OS.retrying { pread(membersFD, &buffer, buffer.count, offset) }
            if n <= 0 { break }
            text += buffer[0..<n]
            offset += off_t(n)
        }
        return text.split(separator: UInt8(ascii: "\n")).compactMap { pid_t(String(decoding: $0, as: UTF8.self)) }
    }

    /// Closes the slot's fds (pool shutdown).
    func closeFDs() {
        for fd in joinFDs { close(fd) }
        if membersFD >= 0 { close(membersFD) }
    }

    /// Kills every process of the call, daemonized or not, and waits until none is alive.
    /// v2: cgroup.kill. v1: freeze forking with pids.max=0, then SIGKILL what is listed
    /// until nothing listed is alive (a fork bomb cannot outrun a zero pids.max).
    /// cgroup v1 keeps listing dead processes until they are reaped, so descendants that
    /// were reparented to ward (a subreaper) are reaped here; `tool`, the direct child, is
    /// left for its caller to reap with its exit status. Returns every pid seen.
    @discardableResult
    func killAll(sparing tool: pid_t = 0) -> Set<pid_t> {
        var seen = Set(members())
        if primaryIsV2 {
            writeSmallFile(primary + "/cgroup.kill", "1")
        } else if let pidsMax {
            writeSmallFile(pidsMax, "0")
            applied.pids = 0
        }
        for attempt in 0..<2000 {
            let pids = members()
            seen.formUnion(pids)
            for pid in pids where pid != tool {
                var status: Int32 = 0
                _ = waitpid(pid, &status, WNOHANG | Int32(bitPattern: 0x4000_0000) /* __WALL */)
            }
            let alive = pids.filter { !CgroupSlot.isDead($0) }
            if alive.isEmpty { break }
            if !primaryIsV2 || attempt > 50 { for pid in alive { kill(pid, SIGKILL) } }
            usleep(attempt < 20 ? 100 : 1000)
        }
        return seen
    }

    /// A zombie, or gone.
    static func isDead(_ pid: pid_t) -> Bool {
        guard let stat = readSmallFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].drop(while: { $0 == " " }).first
        return state == "Z" || state == "X"
    }
}

/// The pool of call cgroups of this process, under `<own cgroup>/ward-<random>/`, each
/// directory `flock`ed for the pool's life. A pool is abandoned when its lock is free: the
/// kernel releases it when the process dies, so another ward (in any PID namespace, even
/// where this one is pid 1) can tell a live pool from a dead one without guessing from pids.
final class CgroupPool: Sendable {
    private struct State {
        var free: [CgroupSlot] = []
        var next = 0
    }

    let roots: [(path: String, isV2: Bool, kind: String)]
    let v2Controllers: Set<String>
    /// The pool's directories, opened and locked (see the type's comment).
    private let lockFDs: [Int32]
    /// The write end of the watchdog's pipe (see `ward_watchdog_start`): if this process
    /// dies, the watchdog kills every call still running in these cgroups. Closed by
    /// whoever takes the watchdog off `HelperProcesses`: `removeAll`, or the exit hook.
    private let watchdogFD: Int32
    /// The watchdog's pid (a child of this process; 0 if none started).
    private let watchdogPID: pid_t
    /// A pids controller (v2 or v1) is available for pids.max.
    var limitsProcesses: Bool { v2Controllers.contains("pids") || roots.contains { $0.kind == "pids" } }
    private let state = Lock(State())

    /// Creates `ward-<random>` in every usable hierarchy; nil when no hierarchy can kill a
    /// tree (neither a writable v2 cgroup nor v1 pids), in which case calls use a PID namespace.
    init?(layout: CgroupLayout) {
        // Unique per pool: two pools sharing a directory would kill each other's calls.
        var rng = SystemRandomNumberGenerator()
        let name = "ward-" + String((0..<16).map { _ in "0123456789abcdef".randomElement(using: &rng)! })
        for root in [layout.v2, layout.v1Pids, layout.v1Memory].compactMap({ $0 }) { CgroupPool.sweepStale(in: root) }
        var roots: [(String, Bool, String)] = []
        var controllers: Set<String> = []
        if let v2 = layout.v2, CgroupPool.makeDirectory(v2 + "/" + name) {
            let dir = v2 + "/" + name
            let available = Set((readSmallFile(dir + "/cgroup.controllers") ?? "").split(separator: " ").map(String.init))
            for c in ["pids", "memory"] where available.contains(c) {
                if writeSmallFile(dir + "/cgroup.subtree_control", "+" + c) == 0 { controllers.insert(c) }
            }
            // A hybrid machine's v2 hierarchy holds no controller: it would only add
            // cgroup.kill, which v1 pids matches (pids.max=0, then SIGKILL), and a v2 join
            // always takes the global lock that `CgroupSlot` explains (6–14 ms after idle).
            if controllers.isEmpty && layout.v1Pids != nil {
                rmdir(dir)
            } else {
                roots.append((dir, true, "v2"))
            }
        }
        if let pids = layout.v1Pids, !controllers.contains("pids"), CgroupPool.makeDirectory(pids + "/" + name) {
            roots.append((pids + "/" + name, false, "pids"))
        }
        if let memory = layout.v1Memory, !controllers.contains("memory"), CgroupPool.makeDirectory(memory + "/" + name) {
            roots.append((memory + "/" + name, false, "memory"))
        }
        // Unlocked, the pool would look abandoned to every other ward.
        let locks = roots.map { CgroupPool.lock($0.0) }
        guard roots.contains(where: { $0.1 || $0.2 == "pids" }), !locks.contains(-1) else {
            for fd in locks where fd >= 0 { close(fd) }
            for root in roots { rmdir(root.0) }
            return nil
        }
        self.roots = roots
        self.v2Controllers = controllers
        lockFDs = locks
        var cPaths = roots.map { strdup($0.0) }
        defer { for p in cPaths { free(p) } }
        var pid: pid_t = 0
        watchdogFD = cPaths.withUnsafeMutableBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) { ward_watchdog_start($0, Int32(buf.count), &pid) }
        }
        watchdogPID = pid
        if pid > 0 { HelperProcesses.add(pid, ending: .close(watchdogFD)) }
    }

    private static func makeDirectory(_ path: String) -> Bool {
        mkdir(path, 0o755) == 0
    }

    /// The kernel gives the initial PID namespace a fixed inode (PROC_PID_INIT_INO).
    static let inInitialPIDNamespace: Bool = {
        var st = stat()
        return stat("/proc/self/ns/pid", &st) == 0 && st.st_ino == 0xEFFF_FFFC
    }()

    /// The directory opened and locked, or -1.
    private static func lock(_ path: String) -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return -1 }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            return -1
        }
        return fd
    }

    /// Removes the call cgroups of ward processes that died without cleaning up (SIGKILL):
    /// whatever still runs in them is killed first, so no tool of a dead supervisor lingers.
    /// A pool is swept only when its lock can be taken, and only if it is older than a second
    /// (a live pool is locked a moment after its directory is made).
    static func sweepStale(in root: String) {
        guard let dir = opendir(root) else { return }
        var stale: [(path: String, lock: Int32)] = []
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            let path = root + "/" + name
            let parts = name.split(separator: "-")
            if parts.count == 3, parts[0] == "ward", let pid = pid_t(parts[1]) {
                // A pool of a ward from before pool locks: only its pid can say, and only in
                // the initial PID namespace, which sees every process (from any other, a live
                // ward's pid looks free).
                if CgroupPool.inInitialPIDNamespace && kill(pid, 0) != 0 && errno == ESRCH { stale.append((path, -1)) }
                continue
            }
            guard parts.count == 2, parts[0] == "ward", parts[1].utf8.count == 16 else { continue }
            var st = stat()
            guard stat(path, &st) == 0, st.st_ctim.tv_sec + 1 < now.tv_sec else { continue }
            let fd = CgroupPool.lock(path)
            if fd >= 0 { stale.append((path, fd)) }
        }
        closedir(dir)
        for (pool, lock) in stale {
            defer { if lock >= 0 { close(lock) } }
            guard let sub = opendir(pool) else { continue }
            var calls: [String] = []
            while let entry = readdir(sub) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name.hasPrefix("call-") { calls.append(pool + "/" + name) }
            }
            closedir(sub)
            for call in calls {
                let isV2 = access(call + "/cgroup.kill", F_OK) == 0
                let slot = CgroupSlot(directories: [call], joinFDs: [], primary: call, primaryIsV2: isV2,
                                      pidsMax: access(call + "/pids.max", F_OK) == 0 ? call + "/pids.max" : nil, memoryMax: nil)
                if !slot.members().isEmpty { slot.killAll() }
                rmdir(call)
            }
            rmdir(pool)
        }
    }

    /// A free slot, or a new one.
    func acquire() throws(SandboxError) -> CgroupSlot {
        let (reused, id) = state.withLock { s -> (CgroupSlot?, Int) in
            if let slot = s.free.popLast() { return (slot, 0) }
            s.next += 1
            return (nil, s.next)
        }
        if let reused { return reused }
        var dirs: [String] = [], fds: [Int32] = []
        var primary: (String, Bool)?
        var pidsMax: String?, memoryMax: String?
        for root in roots {
            let dir = "\(root.path)/call-\(id)"
            guard CgroupPool.makeDirectory(dir) else {
                throw SandboxError(.spawnFailed, "cannot create cgroup \(dir): \(errnoName(errno))", errno: errno)
            }
            let join = dir + (root.isV2 ? "/cgroup.procs" : "/tasks")
            let fd = open(join, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SandboxError(.spawnFailed, "cannot open \(join): \(errnoName(errno))", errno: errno) }
            dirs.append(dir)
            fds.append(fd)
            if root.isV2 {
                primary = (dir, true)
                if v2Controllers.contains("pids") { pidsMax = dir + "/pids.max" }
                if v2Controllers.contains("memory") { memoryMax = dir + "/memory.max" }
            } else if root.kind == "pids" {
                if primary == nil { primary = (dir, false) }
                pidsMax = dir + "/pids.max"
            } else if root.kind == "memory" {
                memoryMax = dir + "/memory.limit_in_bytes"
            }
        }
        return CgroupSlot(directories: dirs, joinFDs: fds, primary: primary!.0, primaryIsV2: primary!.1,
                          pidsMax: pidsMax, memoryMax: memoryMax)
    }

    /// Returns an empty slot to the pool.
    func release(_ slot: CgroupSlot) {
        state.withLock { $0.free.append(slot) }
    }

    /// Removes every call cgroup and `ward-<pid>` itself (at shutdown).
    func removeAll() {
        let slots = state.withLock { s -> [CgroupSlot] in
            defer { s.free.removeAll() }
            return s.free
        }
        for slot in slots {
            slot.killAll()
            slot.closeFDs()
            for dir in slot.directories { rmdir(dir) }
        }
        for root in roots { rmdir(root.path) }
        for fd in lockFDs where fd >= 0 { close(fd) }
        // Its pipe closed, the watchdog finds no call left and exits; reaped here.
        if watchdogPID > 0 && HelperProcesses.remove(watchdogPID) {
            close(watchdogFD)
            var status: Int32 = 0
            _ = OS.retrying { waitpid(watchdogPID, &status, 0) }
        }
    }
}
