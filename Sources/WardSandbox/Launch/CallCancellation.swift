import WardCore

/// Stops one call from another thread: an MCP host's `notifications/cancelled` for a call
/// whose tool runs. The tool's whole tree is killed and the call ends `killed`, recorded like
/// any outcome. The supervisor does not start a call already cancelled; one cancelled between
/// that check and its spawn is killed as soon as it is spawned (`arm`).
public final class CallCancellation: Sendable {
    /// Whether it was cancelled, and how to kill the tool while it runs.
    private let state = Lock<(cancelled: Bool, kill: (@Sendable () -> Void)?)>((false, nil))

    public init() {}

    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    public func cancel() {
        // Under the lock: the waiting thread disarms (under it too) before it reaps the
        // tool, so the pid killed here cannot have been reused.
        state.withLock { s in
            s.cancelled = true
            s.kill?()
        }
    }

    /// While the tool runs: `kill` ends it (at once when cancelled already).
    func arm(_ kill: @escaping @Sendable () -> Void) {
        state.withLock { s in
            s.kill = kill
            if s.cancelled { kill() }
        }
    }

    /// Before the tool is reaped.
    func disarm() { state.withLock { $0.kill = nil } }
}
