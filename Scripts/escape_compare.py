#!/usr/bin/env python3
"""Runs ward's hostile-program corpus under ward's `shell` policy, bubblewrap and firejail,
and prints which behaviours each contains.

    escape_compare.py WARD_BINARY HOSTILE_BINARY POLICIES_DIR

"contained" means the attempt failed (an errno) or the process was killed for it; "ESCAPED"
means it succeeded. The last line is "N passed, N failed" for ward (a failure is a
behaviour ward did not contain); exit 1 when ward let anything through.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile


def behaviours(me: str, tcp_port: int, abstract_name: str, pathname: str) -> list[tuple[str, str, str]]:
    """(label, the fixture's behaviour, its argument): `me`, this process's pid, and the host's
    listening sockets are what a tool must not reach."""
    return [
        ("i386 syscall (int 0x80)", "i386", ""), ("x32 syscall", "x32", ""),
        ("TIOCSTI", "tiocsti", ""), ("TIOCSTI, high bits", "tiocsti-high", ""), ("TIOCLINUX", "tioclinux", ""),
        ("user namespace (unshare)", "unshare-user", ""), ("network namespace", "unshare-net", ""),
        ("user namespace (clone)", "clone-newuser", ""), ("clone3 with namespaces", "clone3", ""),
        ("mount", "mount", ""), ("new mount API (fsopen)", "fsopen", ""), ("chroot", "chroot", ""), ("pivot_root", "pivot_root", ""),
        ("ptrace a host process", "ptrace", me), ("process_vm_readv", "process_vm_readv", me),
        ("bpf", "bpf", ""), ("perf_event_open", "perf_event_open", ""), ("userfaultfd", "userfaultfd", ""),
        ("keyctl", "keyctl", ""), ("io_uring", "io_uring_setup", ""), ("open_by_handle_at", "open_by_handle_at", ""),
        ("kexec_load", "kexec_load", ""), ("reboot", "reboot", ""), ("iopl", "iopl", ""),
        ("fileless exec (memfd+execveat)", "memfd-exec", ""),
        ("personality READ_IMPLIES_EXEC", "personality-rie", ""),
        ("raw socket", "socket-raw", ""), ("netlink socket", "socket-netlink", ""), ("vsock socket", "socket-vsock", ""),
        ("TCP to host loopback", "connect-tcp", str(tcp_port)),
        ("host abstract Unix socket", "connect-abstract", abstract_name),
        ("host pathname Unix socket", "connect-unix", pathname),
        ("signal a host process", "kill-term", me), ("read /proc/PID/environ of the host", "proc-environ", me),
        ("write /etc", "write", "/etc/ward-compare-owned"), ("read /etc/shadow", "read", "/etc/shadow"),
        ("write /tmp of the host", "write", "/tmp/ward-compare-owned"),
        ("device node (mknod c 1 3)", "mknod-char", ""),
        ("regain capabilities (capset)", "capset", ""),
    ]


def verdict(output: str, name: str, status: int | None = None, signal_: int | None = None) -> str:
    """contained / ESCAPED from the fixture's own report; a run that never reached the
    fixture is "did not run", never counted as contained."""
    for line in output.splitlines():
        if line.startswith(name + ":"):
            return "ESCAPED" if line.split(":", 1)[1].strip().startswith("OK") else "contained"
    if "trying" in output and (signal_ or (status is not None and (status < 0 or status >= 128))):
        return "contained"  # killed for the attempt
    return "did not run"


def run_ward(ward: str, policies: str, ws: str, name: str, arg: str) -> str:
    r = subprocess.run([ward, "sandbox", "--json", "--policies", policies, "--workspace", ws, "shell", "--arg",
                        f"command=exec ./ward-hostile {name} {arg}"], capture_output=True, text=True, timeout=60)
    try:
        res = json.loads(r.stdout)
    except json.JSONDecodeError:
        return "error"
    return verdict(res.get("stdout", ""), name, signal_=res.get("signal"))


def run_peer(prefix: list[str], ws: str, name: str, arg: str) -> str:
    try:
        r = subprocess.run(prefix + [os.path.join(ws, "ward-hostile"), name] + ([arg] if arg else []),
                           capture_output=True, text=True, timeout=60, cwd=ws)
    except subprocess.TimeoutExpired:
        return "timeout"
    return verdict(r.stdout, name, status=r.returncode)


def main() -> int:
    ward, hostile, policies = sys.argv[1], sys.argv[2], sys.argv[3]
    # Host resources a tool must not reach, listening for the whole comparison.
    with (
        socket.socket() as tcp,
        socket.socket(socket.AF_UNIX) as abstract,
        socket.socket(socket.AF_UNIX) as unix,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        abstract_name = f"ward-compare-{os.getpid()}"
        abstract.bind("\0" + abstract_name)
        abstract.listen(8)
        pathname = os.path.join(tempfile.mkdtemp(prefix="ward-compare-"), "host.sock")
        unix.bind(pathname)
        unix.listen(8)
        os.chmod(pathname, 0o777)
        return compare(ward, hostile, policies, behaviours(str(os.getpid()), tcp.getsockname()[1], abstract_name, pathname))


def compare(ward: str, hostile: str, policies: str, cases: list[tuple[str, str, str]]) -> int:
    """Runs each behaviour under ward and each peer found; prints the table and the tally."""
    # Outside /tmp: firejail's default profile gives the sandbox a private /tmp.
    os.makedirs(os.path.join(os.getcwd(), ".build"), exist_ok=True)
    ws = tempfile.mkdtemp(prefix="compare-ws-", dir=os.path.join(os.getcwd(), ".build"))
    shutil.copy(hostile, os.path.join(ws, "ward-hostile"))
    peers = {}
    if shutil.which("bwrap"):
        peers["bwrap"] = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", ws, ws,
                          "--unshare-all", "--die-with-parent"]
    if shutil.which("firejail"):
        peers["firejail"] = ["firejail", "--quiet"]

    header = ["behaviour", "ward (shell policy)"] + list(peers)
    rows = []
    failed = 0
    for label, name, arg in cases:
        w = run_ward(ward, policies, ws, name, arg)
        failed += w != "contained"
        rows.append([label, w] + [run_peer(p, ws, name, arg) for p in peers.values()])

    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print("  ".join(h.ljust(widths[i]) for i, h in enumerate(header)))
    for r in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)))
    for i, peer in enumerate(peers, start=2):
        escaped = sum(1 for r in rows if r[i] == "ESCAPED")
        other = sum(1 for r in rows if r[i] not in ("ESCAPED", "contained"))
        print(f"{peer}: {escaped} of {len(rows)} behaviours escaped" + (f", {other} could not be run" if other else ""))
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
