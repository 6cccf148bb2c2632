import Foundation
import Synchronization
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// A ledger handle's lease on a PostgreSQL ledger: a row of `owners` whose `expires_at` the
/// handle pushes forward every third of the lease while it lives. The server's clock judges
/// it, so a host whose clock is wrong cannot take another's calls early.
///
/// Once the lease expires unrenewed (the process was paused, or cut off from the server),
/// it is lost for good: the token is never renewed again, outcomes under it are fenced
/// (`PostgresStore.fence`), and the handle makes a new lease for new calls. A token is
/// thus one epoch of one supervisor.
final class Lease: LedgerOwner {
    let token: String
    private let state: LeaseState

    var isLost: Bool { state.isLost }

    /// `onLost` runs on the renewing thread once the lease is lost.
    init(store: PostgresStore, onLost: @escaping @Sendable () -> Void) throws {
        var rng = SystemRandomNumberGenerator()
        let token = Digest.hex((0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })
        self.token = token
        let seconds = store.leaseSeconds
        let granted = ContinuousClock.now
        try store.onSide { link in
            _ = try link.query("""
                INSERT INTO owners (token, host, pid, command, expires_at) VALUES (?, ?, ?, ?, now() + make_interval(secs => ?))
                """, [.text(token), .text(Lease.host), .int(Int(getpid())), .text(ProcessIdentity.commandName), .real(seconds)])
        }
        state = LeaseState(store: store, token: token, granted: granted, onLost: onLost)
        let renewing = Thread { [state] in state.renew() }
        renewing.name = "ward-lease"
        renewing.start()
        let watching = Thread { [state] in state.watch() }
        watching.name = "ward-lease-deadline"
        watching.start()
    }

    /// Released at once when the handle goes away: its calls are settled by then, or, if not,
    /// another supervisor may take them now rather than when the lease would have expired.
    deinit { state.stop(release: true) }

    /// The host a lease names: `WARD_HOST` when set (hosts simulated on one machine), else
    /// the host name.
    static let host: String = {
        if let named = ProcessInfo.processInfo.environment["WARD_HOST"], !named.isEmpty { return named }
        var buffer = [UInt8](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }()
}

/// What the renewing thread and the lease share.
private final class LeaseState: Sendable {
    let store: PostgresStore
    let token: String
    private let lost = Atomic<Bool>(false)
    private let stopped = Mutex<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    private let onLost: @Sendable () -> Void
    /// When the lease expires by this host's clock: the send time of the last renewal that
    /// succeeded (the server counts from its statement, which comes after), plus the lease.
    private let validUntil: Mutex<ContinuousClock.Instant>

    init(store: PostgresStore, token: String, granted: ContinuousClock.Instant, onLost: @escaping @Sendable () -> Void) {
        self.store = store
        self.token = token
        self.onLost = onLost
        validUntil = Mutex(granted + .milliseconds(Int(store.leaseSeconds * 1000)))
    }

    /// Once, whichever thread finds it first; never while stopping cleanly.
    private func lose() {
        guard !stopped.withLock({ $0 }), !lost.exchange(true, ordering: .acquiringAndReleasing) else { return }
        onLost()
    }

    var isLost: Bool { lost.load(ordering: .acquiring) || ContinuousClock.now >= validUntil.withLock { $0 } }

    /// Renews every third of the lease. A renewal that finds the lease expired (this process
    /// was paused past it) loses it.
    func renew() {
        let seconds = store.leaseSeconds
        while true {
            _ = wake.wait(timeout: .now() + seconds / 3)
            if stopped.withLock({ $0 }) || lost.load(ordering: .acquiring) { return }
            let sent = ContinuousClock.now
            do {
                let renewed = try store.onSide { link in
                    try link.query("""
                        UPDATE owners SET expires_at = now() + make_interval(secs => ?) WHERE token = ? AND expires_at > now()
                        """, [.real(seconds), .text(token)]).affected
                }
                if renewed == 0 { return lose() }
                validUntil.withLock { $0 = max($0, sent + .milliseconds(Int(seconds * 1000))) }
            } catch {
                // The deadline thread decides: a renewal that hangs must not keep tools running.
            }
        }
    }

    /// Loses the lease when it expires by this host's clock, whatever the renewals are
    /// doing (hung on a cut-off network, or this process paused): no I/O here, so a call's
    /// tools are stopped when the server may already let another supervisor judge it.
    func watch() {
        while true {
            let until = validUntil.withLock { $0 }
            let left = until - ContinuousClock.now
            if left <= .zero {
                if validUntil.withLock({ $0 }) <= ContinuousClock.now { return lose() }
                continue
            }
            let (s, atto) = left.components
            _ = wake.wait(timeout: .now() + Double(s) + Double(atto) / 1e18)
            if stopped.withLock({ $0 }) || lost.load(ordering: .acquiring) { return }
        }
    }

    func stop(release: Bool) {
        stopped.withLock { $0 = true }
        wake.signal()
        wake.signal()
        if release && !isLost {
            _ = try? store.onSide { link in
                try link.query("UPDATE owners SET expires_at = now() WHERE token = ? AND expires_at > now()", [.text(token)])
            }
        }
    }
}

extension PostgresStore {
    func makeOwner(onLost: @escaping @Sendable () -> Void) throws(LedgerError) -> any LedgerOwner {
        do { return try Lease(store: self, onLost: onLost) } catch {
            throw PostgresStore.map(error, doing: "taking a lease on the ledger at \(address)") ?? LedgerError(.storage, "\(error)")
        }
    }

    /// Alive while its lease holds by the server's clock.
    func ownerState(_ owner: String) -> OwnerState {
        do {
            let row = try onSide { link in
                try link.query("""
                    SELECT expires_at > now(), host, pid, command, to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                    FROM owners WHERE token = ?
                    """, [.text(owner)]).rows.first
            }
            // Every token is recorded before it is used: no row is a lease that expired and was swept.
            guard let row else { return .dead("its lease \(owner) expired and was swept") }
            if row[0] == .int(1) { return .alive }
            return .dead("its lease expired at \(row[4].textValue ?? "?") (host \(row[1].textValue ?? "?"), pid \(row[2].integer ?? 0), \(row[3].textValue ?? "?"))")
        } catch {
            // Not declared dead on a guess: the call waits until the server answers.
            return .unknown("its lease cannot be read: \(error)")
        }
    }

    /// Deletes leases that expired a while ago and own no running call.
    func sweepOwners(keeping keep: Set<String>) {
        _ = try? onSide { link in
            try link.query("""
                DELETE FROM owners o WHERE o.expires_at < now() - interval '1 hour'
                    AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.owner = o.token AND c.status = 'running')
                    AND NOT EXISTS (SELECT 1 FROM run_locks r WHERE r.owner = o.token)
                """)
        }
    }

    /// The SQL that an outcome's UPDATE of `calls` adds to its WHERE: the row's owner still
    /// holds its lease, by the server's clock, in the same statement.
    /// Refuses, inside a write transaction, to record a call under a lease that no longer
    /// holds (a process resumed after a pause, before its renewal noticed).
    func requireOwner(_ db: any SQLConnection, _ token: String) throws {
        guard try db.int("SELECT 1 FROM owners WHERE token = ? AND expires_at > statement_timestamp()", token) != nil else {
            throw LedgerError(.storage, "this process's lease on the ledger expired: the call was not started")
        }
    }

    var fence: String { " AND EXISTS (SELECT 1 FROM owners o WHERE o.token = calls.owner AND o.expires_at > statement_timestamp())" }

    /// A row of `run_locks` naming this handle's lease: taken when there is none, or when its
    /// holder's lease expired (a supervisor that died or was cut off, on any host).
    func lockRun(_ run: String, owner: String) throws(LedgerError) -> RunLock {
        do {
            let holder: [SQLValue]? = try onSide { link in
                let taken = try link.query("""
                    INSERT INTO run_locks (run_id, owner) VALUES (?, ?)
                    ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner, since = now()
                    WHERE run_locks.owner = EXCLUDED.owner
                       OR NOT EXISTS (SELECT 1 FROM owners o WHERE o.token = run_locks.owner AND o.expires_at > now())
                    """, [.text(run), .text(owner)]).affected
                if taken == 1 { return nil }
                return try link.query("""
                    SELECT o.host, o.pid, o.command FROM run_locks r JOIN owners o ON o.token = r.owner WHERE r.run_id = ?
                    """, [.text(run)]).rows.first ?? []
            }
            if let holder {
                let who = holder.count == 3 ? " (host \(holder[0].textValue ?? "?"), pid \(holder[1].integer ?? 0), \(holder[2].textValue ?? "?"))" : ""
                throw LedgerError(.busy, "run \(run) is served by another supervisor\(who) on this ledger")
            }
        } catch let error as LedgerError {
            throw error
        } catch {
            throw PostgresStore.map(error, doing: "taking the lock of run \(run)") ?? LedgerError(.storage, "\(error)")
        }
        return RunLock { [self] in
            _ = try? self.onSide { link in try link.query("DELETE FROM run_locks WHERE run_id = ? AND owner = ?", [.text(run), .text(owner)]) }
        }
    }

    /// A session advisory lock on a connection of its own, waited for: the other holder's
    /// work is bounded (a reconcile command by the tool's timeout), and a holder that dies
    /// releases it with its connection.
    func withLock<T>(named name: String, _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        let link: PostgresLink
        do {
            link = try PostgresLink(address, timeout: address.connectTimeout ?? 10)
            _ = try link.query("SELECT pg_advisory_lock(\(PostgresStore.runClass + 1), \(PostgresStore.runKey(name)))")
        } catch {
            throw PostgresStore.map(error, doing: "taking the lock \(name)") ?? LedgerError(.storage, "\(error)")
        }
        defer { link.close() }
        return try body()
    }
}
