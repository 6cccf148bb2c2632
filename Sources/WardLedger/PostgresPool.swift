import Foundation

/// Up to `size` PostgresLinks to one address, shared by threads: `with` lends one out,
/// blocking while all are busy. Links are made when first needed; one that broke (or whose
/// connection the server closed while it sat idle) is dropped and replaced by a new one on
/// a later `with`. Connecting is tried 3 times (100 and 300 ms apart) when the server cannot
/// be reached or is starting up; a rejected login fails at once. Statements are never
/// retried here: only the caller knows whether one may run again (a COMMIT whose answer was
/// lost may have committed).
///
/// A link lent to a body that throws gets a ROLLBACK before it goes back, so the next body
/// never finds a failed transaction left open; a body that returns must have ended its own.
final class PostgresPool: Sendable {
    let address: PostgresAddress
    let size: Int
    let timeout: Double
    private let state = Shelf()
    static let retryDelays: [Double] = [0.1, 0.3]

    init(_ address: PostgresAddress, size: Int = 4, timeout: Double = 10) {
        precondition(size >= 1, "a pool holds at least one link")
        self.address = address
        self.size = size
        self.timeout = timeout
    }

    deinit { close() }

    /// Runs `body` with a link of its own for the time of the call.
    func with<T>(_ body: (PostgresLink) throws -> T) throws -> T {
        let link = try checkOut()
        var returned = false
        defer { checkIn(link, afterFailure: !returned) }
        let value = try body(link)
        returned = true
        return value
    }

    /// Closes the idle links; links lent out close when they come back.
    func close() {
        state.withLock { $0.closed = true }
        dropIdle()
    }

    /// Closes the idle links (they are made again when needed): after one was found dead
    /// unseen, the others from its time may be too.
    func dropIdle() {
        let idle = state.withLock { shelf -> [PostgresLink] in
            defer { shelf.total -= shelf.idle.count; shelf.idle = [] }
            return shelf.idle
        }
        for link in idle { link.close() }
        state.signal()
    }

    /// How many links exist, lent out or idle (for tests and diagnostics).
    var linkCount: Int { state.withLock { $0.total } }

    private func checkOut() throws -> PostgresLink {
        while true {
            enum Next { case use(PostgresLink), discard(PostgresLink), make }
            let next: Next = try state.waitAndTake { shelf in
                if shelf.closed {
                    throw PostgresFailure(sqlState: nil, message: "the pool of \(address.redacted) is closed", connectionLost: false)
                }
                if let link = shelf.idle.popLast() {
                    if link.isBroken { shelf.total -= 1; return .discard(link) }
                    return .use(link)
                }
                guard shelf.total < size else { return nil }
                shelf.total += 1
                return .make
            }
            switch next {
            case .use(let link): return link
            case .discard(let link): link.close(); state.signal()
            case .make:
                do {
                    return try connect()
                } catch {
                    state.withLock { $0.total -= 1 }
                    state.signal()
                    throw error
                }
            }
        }
    }

    private func checkIn(_ link: PostgresLink, afterFailure: Bool) {
        if afterFailure && !link.isBroken {
            _ = try? link.query("ROLLBACK")
        }
        // Counted out whenever it is not kept: a broken link left in `total` would hold a
        // place in the pool for ever, and once all were such, every caller would wait.
        let keep = state.withLock { shelf in
            if link.isBroken || shelf.closed { shelf.total -= 1; return false }
            shelf.idle.append(link)
            return true
        }
        if !keep {
            link.close()
        }
        state.signal()
    }

    private func connect() throws -> PostgresLink {
        var tries = 0
        while true {
            do {
                return try PostgresLink(address, timeout: timeout)
            } catch let failure as PostgresFailure where failure.connectionLost && tries < Self.retryDelays.count {
                Thread.sleep(forTimeInterval: Self.retryDelays[tries])
                tries += 1
            } catch let failure as PostgresFailure where tries > 0 {
                throw PostgresFailure(sqlState: failure.sqlState, message: "\(failure.message) (after \(tries + 1) tries)", connectionLost: failure.connectionLost)
            }
        }
    }
}

/// The pool's mutable state behind a condition variable.
private final class Shelf: @unchecked Sendable {
    struct Contents {
        var idle: [PostgresLink] = []
        var total = 0
        var closed = false
    }

    private let condition = NSCondition()
    private var contents = Contents()

    func withLock<R>(_ body: (inout Contents) throws -> R) rethrows -> R {
        condition.lock()
        defer { condition.unlock() }
        return try body(&contents)
    }

    /// Calls `take` until it returns a value, waiting for a signal after each nil.
    func waitAndTake<R>(_ take: (inout Contents) throws -> R?) throws -> R {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let r = try take(&contents) { return r }
            condition.wait()
        }
    }

    func signal() {
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }
}
