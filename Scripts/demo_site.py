#!/usr/bin/env python3
"""ward's demo: an agent builds a small static site in 47 tool calls and publishes it once.

    demo_site.py demo WARD_BINARY            the whole demo (Scripts/demo runs this)
    demo_site.py agent                       the agent, under `ward run` (uses the ward_client package)
    demo_site.py naive                       the same agent without ward: tools run directly

The agent's "model" is a deterministic planner; every decision is recorded with
journal.record, as a real agent records its LLM responses, and its state is checkpointed
with each tool call. A file named `crash-once` in the working directory makes the agent die
(once) right after the step it names.
"""
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

# ward's Python client is the package in python/ (`pip install ./python`); the scripts use it
# from the checkout.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
from ward_client import Ward  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PAGES = ["index", "about", "blog", "post-1", "post-2", "post-3", "contact", "faq", "docs", "changelog"]
BUILD_PY = """import html
import pathlib
pages = sorted(p.stem for p in pathlib.Path("pages").glob("*.md"))
nav = "<nav>" + " ".join(f'<a href="{p}.html">{p}</a>' for p in pages) + "</nav>"
pathlib.Path("site").mkdir(exist_ok=True)
for name in pages:
    lines = pathlib.Path("pages", name + ".md").read_text().splitlines()
    title, body = lines[0].lstrip("# "), "".join(f"<p>{html.escape(l)}</p>" for l in lines[1:] if l)
    pathlib.Path("site", name + ".html").write_text(f"<html><title>{title}</title>{nav}<h1>{title}</h1>{body}</html>")
print(f"built {len(pages)} pages")
"""


def plan(step: int) -> tuple[str, dict[str, str]]:
    """The 'model': which tool call comes at each step (deterministic, like a seeded LLM)."""
    if step < 10:
        page = PAGES[step]
        content = f"# {page.replace('-', ' ').title()}\nThis is the {page} page.\nWritten by an agent under ward.\n"
        return "write_file", {"path": f"pages/{page}.md", "content": content}
    if step == 10:
        return "write_file", {"path": "build.py", "content": BUILD_PY}
    if step == 11:
        return "build_site", {}
    if step < 22:
        page = PAGES[step - 12]
        return "check_page", {"page": page, "text": f"<h1>{page.replace('-', ' ').title()}</h1>"}
    if step < 32:
        return "check_page", {"page": PAGES[step - 22], "text": "<nav>"}
    if step == 32:
        return "list_dir", {"path": "site"}
    if step < 43:
        return "read_file", {"path": f"site/{PAGES[step - 33]}.html"}
    if step == 43:
        return "commit_site", {"message": "build the site"}
    if step == 44:
        return "publish", {}
    if step == 45:
        return "commit_site", {"message": "build the site"}
    return "list_dir", {"path": "."}


STEPS = 47


def decide(step: int) -> dict[str, Any]:
    """The decision at `step` as the agent records it."""
    tool, arguments = plan(step)
    return {"tool": tool, "arguments": arguments}


def maybe_crash(step: int) -> None:
    try:
        with open("crash-once") as f:
            at = int(f.read())
    except FileNotFoundError:
        return
    if step == at:
        os.remove("crash-once")
        print(f"  💥 the agent crashes after step {step + 1}", flush=True)
        os._exit(1)


def run_agent() -> None:
    ward = Ward()
    resumed = ward.resume()
    state: dict[str, Any] = (resumed["checkpoint"] or {}).get("state") or {"step": 0}
    start: int = state["step"]
    attempt = resumed["attempt"]
    print(f"  ▶ attempt {attempt}: resuming at step {start + 1} of {STEPS}" if start else f"  ▶ attempt {attempt}: starting",
          flush=True)
    counts = {"ran": 0, "replayed": 0}
    for step in range(start, STEPS):
        decision = ward.journal(f"decision-{step}", functools.partial(decide, step))
        result = ward.call(decision["tool"], decision["arguments"], call_id=f"step-{step}", checkpoint={"step": step})
        how = "replayed" if result["replayed"] else "ran"
        counts[how] += 1
        if result["status"] not in ("succeeded", "resolved"):
            print(f"  step {step + 1} failed: {result['status']} {result['stderr']}", flush=True)
            sys.exit(2)
        print(f"    step {step + 1:2}/{STEPS} {decision['tool']:11} {how}", flush=True)
        maybe_crash(step)
    print(f"  ✔ attempt {attempt} finished: {counts['ran']} calls ran, {counts['replayed']} replayed", flush=True)


def run_naive() -> None:
    """The same plan with no ledger, no checkpoints, no sandbox: a restart starts over."""
    def call(tool: str, a: dict[str, str]) -> None:
        if tool == "write_file":
            os.makedirs(os.path.dirname(a["path"]) or ".", exist_ok=True)
            with open(a["path"], "w") as f:
                f.write(a["content"])
        elif tool == "build_site":
            subprocess.run([sys.executable, "-I", "build.py"], check=True, capture_output=True)
        elif tool == "publish":
            with open("published.log", "a") as f:
                f.write(f"naive {len(os.listdir('site'))} pages\n")
        # checks, listings and commits change nothing that the comparison looks at
    for step in range(STEPS):
        tool, args = plan(step)
        call(tool, args)
        maybe_crash(step)
    print("  ✔ naive agent finished", flush=True)


def site_digest(workspace: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(os.path.join(workspace, "site"))):
        h.update(name.encode())
        with open(os.path.join(workspace, "site", name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def demo(ward_bin: str) -> int:
    policies = os.path.join(os.path.dirname(HERE), "policies")
    agent = [sys.executable, os.path.abspath(__file__), "agent"]
    rng = random.Random()
    kill_ward_at = rng.randint(6, 38)   # ward itself is SIGKILLed after this step
    crash_at = rng.randint(44, 45)       # the agent dies after this step (after publishing)
    root = tempfile.mkdtemp(prefix="ward-demo-")
    try:
        work = os.path.join(root, "with-ward")
        os.makedirs(work, mode=0o700)  # the socket directory: ward refuses one that others may enter
        with open(os.path.join(work, "crash-once"), "w") as f:
            f.write(str(crash_at))
        # Each run's socket in its own directory: another demo or test on this machine may
        # be using the same run IDs at the same time.
        run = ["run", "--policies", policies, "--run-id", "site", "--socket", os.path.join(work, "ward.sock"), "--", *agent]
        print(f"\n== 1. The agent under `ward run`; ward is SIGKILLed after step {kill_ward_at + 1}, "
              f"the agent crashes after step {crash_at + 1} ==")
        t0 = time.time()
        with subprocess.Popen([ward_bin, *run], cwd=work, stdout=subprocess.PIPE, text=True) as killed:
            assert killed.stdout is not None
            for line in killed.stdout:
                print(line, end="", flush=True)
                if line.strip().startswith(f"step {kill_ward_at + 1:2}/"):
                    killed.send_signal(signal.SIGKILL)
                    print("  💥 ward run itself is SIGKILLed (the agent and any running tool die with it)", flush=True)
                    break
        print("\n== 2. `ward run --run-id site` again: it recovers the run and the agent resumes ==")
        p = subprocess.run([ward_bin, *run], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(p.stdout, end="")
        elapsed = time.time() - t0
        runs = json.loads(subprocess.run([ward_bin, "runs", "list", "--json"], cwd=work, capture_output=True, text=True).stdout)
        verify = subprocess.run([ward_bin, "ledger", "verify"], cwd=work, capture_output=True, text=True)
        ws = os.path.join(work, "workspace")
        with open(os.path.join(ws, "published.log")) as f:
            published = f.read().splitlines()

        print("\n== 3. The same agent, never interrupted (for comparison) ==")
        ref = os.path.join(root, "reference")
        os.makedirs(ref, mode=0o700)
        r = subprocess.run([ward_bin, "run", "--policies", policies, "--run-id", "ref", "--socket", os.path.join(ref, "ward.sock"),
                            "--", *agent], cwd=ref, capture_output=True, text=True)
        print(r.stdout.splitlines()[-1])
        same = site_digest(ws) == site_digest(os.path.join(ref, "workspace"))

        print(f"\n== 4. The same agent without ward, crashed after step {crash_at + 1} and restarted ==")
        naive = os.path.join(root, "naive")
        os.makedirs(naive)
        with open(os.path.join(naive, "crash-once"), "w") as f:
            f.write(str(crash_at))
        for _ in range(2):
            subprocess.run([sys.executable, os.path.abspath(__file__), "naive"], cwd=naive)
        with open(os.path.join(naive, "published.log")) as f:
            naive_published = f.read().splitlines()

        print("\n== Summary ==")
        ok = True

        def check(cond: bool, text: str) -> None:
            nonlocal ok
            ok &= cond
            print(f"  {'✔' if cond else '✘'} {text}")

        check(p.returncode == 0, f"the run finished (exit {p.returncode}) in {elapsed:.1f} s over {runs[0]['attempts']} attempts")
        check(len(published) == 1, f"with ward, published.log has {len(published)} line (the publish call ran exactly once)")
        check(same, "the site is identical to an uninterrupted run's")
        check(verify.returncode == 0, "ward ledger verify: every event's hash chain checks out")
        check(len(naive_published) == 2, f"without ward, published.log has {len(naive_published)} lines: the site was published twice")
        print(f"\n  Explore: cd {work} && {ward_bin} ledger list --run site   (kept until the next demo)")
        return 0 if ok else 1
    finally:
        for old in sorted(os.listdir(tempfile.gettempdir())):
            path = os.path.join(tempfile.gettempdir(), old)
            if old.startswith("ward-demo-") and path != root:
                shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "demo"
    if mode == "agent":
        run_agent()
    elif mode == "naive":
        run_naive()
    else:
        return demo(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
