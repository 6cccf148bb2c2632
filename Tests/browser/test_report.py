"""`ward ledger report` opened in a real headless Chromium (Scripts/headless.py): the demo's
crashed-and-resumed run, a run whose tool prints markup, and a run of 10,000 calls.

    WARD=.build/debug/ward python3 -m unittest discover -s Tests/browser -t Tests/browser

ward-torture (built beside ward) makes the 10,000-call run; Scripts/setup --browser installs
Chromium.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "Scripts"))
from headless import Browser, Page, png_pixels  # noqa: E402

WARD = os.environ.get("WARD", str(ROOT / ".build" / "debug" / "ward"))
HOSTILE = '</script><script>window.pwned = 1; document.title = "pwned"</script><img src=x onerror="window.pwned = 2"><!--'


def ward(*args: str, cwd: str | None = None) -> str:
    return subprocess.run([WARD, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


class ReportInBrowserTests(unittest.TestCase):
    browser: Browser
    root: str
    demo: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.root = tempfile.mkdtemp(prefix="ward-report-browser-")
        # The demo's agent builds a site under `ward run`, crashes, has ward SIGKILLed and
        # resumes: its ledger is left in TMPDIR/ward-demo-*/with-ward.
        demo_tmp = os.path.join(cls.root, "demo")
        os.makedirs(demo_tmp)
        subprocess.run([sys.executable, str(ROOT / "Scripts" / "demo_site.py"), "demo", WARD], check=True, capture_output=True,
                       env={**os.environ, "TMPDIR": demo_tmp})
        cls.demo = glob.glob(os.path.join(demo_tmp, "ward-demo-*", "with-ward"))[0]
        cls.browser = Browser()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.browser.close()
        shutil.rmtree(cls.root, ignore_errors=True)

    def open(self, html: str) -> tuple[Page, float]:
        page = self.browser.new_page()
        seconds = page.navigate("file://" + html)
        self.addCleanup(lambda: self.assertEqual(page.errors, [], "the page reported errors"))
        return page, seconds

    def rows_shown(self, page: Page) -> list[str]:
        """Every call ID the list shows, scrolled through from top to bottom."""
        ids: list[str] = []
        seen: set[str] = set()
        page.evaluate("document.getElementById('list').scrollTop = 0")
        while True:
            time.sleep(0.05)  # the list renders on the next animation frame
            for cid in page.evaluate("[...document.querySelectorAll('#rows .row .cid')].map(e => e.textContent)"):
                if cid not in seen:
                    seen.add(cid)
                    ids.append(cid)
            moved = page.evaluate("(() => { const l = document.getElementById('list'); const before = l.scrollTop;"
                                  " l.scrollTop += l.clientHeight; return l.scrollTop !== before; })()")
            if not moved:
                return ids

    def click_row(self, page: Page, index: int) -> None:
        """Scrolls the list to call `index` and clicks its row with the mouse."""
        page.evaluate(f"document.getElementById('list').scrollTop = {index} * 24")
        time.sleep(0.1)
        box: dict[str, float] = page.evaluate(
            f"(() => {{ const r = document.querySelector('#rows .row[data-call=\"{index}\"]').getBoundingClientRect();"
            " return {x: r.x + r.width / 3, y: r.y + r.height / 2}; })()")
        page.click(box["x"], box["y"])

    def test_demo_run(self) -> None:
        html = os.path.join(self.root, "demo.html")
        ward("ledger", "report", "--html", html, cwd=self.demo)  # the most recently active run: site
        page, _ = self.open(html)
        calls = json.loads(ward("ledger", "list", "--run", "site", "--json", cwd=self.demo))
        verify = json.loads(ward("ledger", "verify", "--run", "site", "--json", cwd=self.demo))
        self.assertEqual(page.evaluate("document.getElementById('run-id').textContent"), "site")
        self.assertIn("ledger verify: passed", page.evaluate("document.getElementById('verify').textContent"))
        self.assertEqual(page.evaluate("document.getElementById('head').textContent"), verify["runs"][0]["head"])
        self.assertEqual(sorted(self.rows_shown(page)), sorted(c["callId"] for c in calls))
        # The attempts: one button each, the crash and resumption made three.
        attempts = json.loads(ward("runs", "list", "--json", cwd=self.demo))[0]["attempts"]
        self.assertGreaterEqual(attempts, 2)
        self.assertEqual(page.evaluate("[...document.querySelectorAll('#zoom button')].length"), attempts + 1)

        # A real click on the build step's row shows its arguments, output and effects.
        index = page.evaluate("JSON.parse(document.getElementById('ward-data').textContent).calls.findIndex(c => c.id === 'step-11')")
        self.click_row(page, index)
        details = page.evaluate("document.getElementById('details').innerText")
        self.assertIn("step-11", details)
        self.assertIn("build_site", details)
        self.assertIn("Arguments", details)
        self.assertIn("built 10 pages", details)  # its stdout
        self.assertIn("Effects", details)
        self.assertIn("call.finish", details)
        self.assertTrue(page.evaluate("document.querySelector('#rows .row.sel .cid').textContent === 'step-11'"))

        # The timeline: the mouse finds a bar along the lane, and a click there shows its call.
        canvas = page.evaluate("(() => { const r = document.getElementById('canvas').getBoundingClientRect();"
                               " return {x: r.x, y: r.y + r.height - 12, width: r.width}; })()")
        def finds_a_bar(x: int) -> bool:
            page.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": canvas["y"]})
            return bool(page.evaluate("document.getElementById('tip').style.display === 'block'"))
        hovered = next((x for x in range(int(canvas["x"]), int(canvas["x"] + canvas["width"]), 3) if finds_a_bar(x)), -1)
        self.assertGreaterEqual(hovered, 0, "no bar under the mouse anywhere along the lane")
        tip = page.evaluate("document.getElementById('tip').textContent")
        page.click(hovered, canvas["y"])
        self.assertEqual(page.evaluate("document.querySelector('#details .call-id').textContent"), tip.split("\n")[0])
        # Zoomed in with the wheel and panned with a drag, it draws again without an error.
        page.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": hovered, "y": canvas["y"], "deltaX": 0, "deltaY": -600})
        for kind, dx in (("mousePressed", 0), ("mouseMoved", 40), ("mouseReleased", 40)):
            page.call("Input.dispatchMouseEvent", {"type": kind, "x": hovered + dx, "y": canvas["y"], "button": "left", "clickCount": 1})

        # Not blank: far more than an empty page's screenshot, and the timeline's colours.
        shot = page.screenshot()
        blank = self.browser.new_page()
        blank.navigate("about:blank")
        self.assertGreater(len(shot), 10 * len(blank.screenshot()))
        width, height, pixels = png_pixels(page.screenshot(scale=0.25))
        self.assertEqual((width, height), (320, 225))
        self.assertGreater(len(set(pixels)), 50)
        green = (0x2F, 0x9E, 0x58)
        self.assertTrue(any(sum(abs(a - b) for a, b in zip(p, green, strict=True)) < 12 for p in pixels), "no succeeded bar drawn")

    def test_effects(self) -> None:
        # Until ward records traces, the page's rendering of them is fed one: the data block of
        # a real report with a trace given to its first call, as the report's builder makes it
        # from a `call.finish` event's `trace` (Tests/WardLedgerTests/ReportTests.swift).
        html = os.path.join(self.root, "effects.html")
        ward("ledger", "report", "--run", "site", "--html", html, cwd=self.demo)
        text = Path(html).read_text()
        start = text.index('id="ward-data">') + len('id="ward-data">')
        end = text.index("</script>", start)
        data = json.loads(text[start:end])
        data["calls"][0]["effects"] = [{"execution": 1, "mode": "attempted", "dropped": 7, "effects": [
            [3, 41, "write /w/pages/index.md (append)"], [9, 42, "exec /usr/bin/git commit -m 'a b'"], [12, 42, "connect 127.0.0.1:8080"]]}]
        Path(html).write_text(text[:start] + json.dumps(data).replace("<", "\\u003c") + text[end:])
        page, _ = self.open(html)
        self.click_row(page, 0)
        effects = page.evaluate("document.querySelector('#details .effects').innerText")
        self.assertIn("attempted effects", effects)
        for line in ("+3 ms pid 41", "write /w/pages/index.md (append)", "exec /usr/bin/git commit -m 'a b'", "connect 127.0.0.1:8080",
                     "… 7 more not recorded (trace capped)"):
            self.assertIn(line, effects)

    def test_verdicts_and_approvals(self) -> None:
        # Under a real ward serve: a gated tool's call approved and run, another denied, and a
        # call caught running when ward is SIGKILLed, put in doubt and settled by an operator.
        place = os.path.join(self.root, "verdicts")
        os.makedirs(place, mode=0o700)
        policies = os.path.join(place, "policies")
        shutil.copytree(ROOT / "policies", policies)
        with open(os.path.join(policies, "tools.toml"), "a") as f:
            f.write('\n[tools.send_mail]\ncommand = ["/bin/echo", "sent to {to}"]\narguments = ["to"]\napprove = true\n')
        socket = os.path.join(place, "ward.sock")
        with subprocess.Popen([WARD, "serve", "--policies", policies, "--run-id", "verdicts", "--socket", socket],
                              cwd=place, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as serve:
            assert serve.stdout is not None
            serve.stdout.readline()  # the socket's path, once it listens
            for to, verdict in (("bob", "approve"), ("eve", "deny")):
                subprocess.run([WARD, "call", "--socket", socket, "--call-id", "mail-" + to, "send_mail", "--arg", "to=" + to],
                               cwd=place, capture_output=True)  # awaits approval: exit 1
                ward(verdict, "verdicts", "mail-" + to, "--note", f"{to} checked", cwd=place)
            ward("call", "--socket", socket, "--call-id", "mail-bob", "send_mail", "--arg", "to=bob", cwd=place)
            with subprocess.Popen([WARD, "call", "--socket", socket, "--call-id", "slow", "shell", "--arg", "command=sleep 30"],
                                  cwd=place, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as slow:
                time.sleep(1.5)
                serve.kill()
                serve.wait()
                slow.wait(timeout=30)
        ward("ledger", "resolve", "verdicts", "slow", "--as", "not-executed", "--note", "no sleep ran", cwd=place)
        html = os.path.join(self.root, "verdicts.html")
        ward("ledger", "report", "--html", html, cwd=place)
        page, _ = self.open(html)
        in_doubt = page.evaluate("document.getElementById('in-doubt').innerText")
        self.assertIn("slow", in_doubt)
        self.assertIn("resolved not-executed by operator: no sleep ran", in_doubt)
        approvals = page.evaluate("document.getElementById('approvals').innerText")
        self.assertRegex(approvals, r"mail-bob.*approved by \S+: bob checked")
        self.assertRegex(approvals, r"mail-eve.*denied by \S+: eve checked")
        self.assertIn("denied 1", page.evaluate("document.getElementById('legend').innerText"))

    def test_hostile_output_stays_text(self) -> None:
        # A real tool prints markup under ward serve; its call is then reported.
        place = os.path.join(self.root, "hostile")
        os.makedirs(place, mode=0o700)
        socket = os.path.join(place, "ward.sock")
        with subprocess.Popen([WARD, "serve", "--policies", str(ROOT / "policies"), "--run-id", "hostile", "--socket", socket],
                              cwd=place, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as serve:
            try:
                assert serve.stdout is not None
                serve.stdout.readline()  # the socket's path, once it listens
                command = "printf '%s' " + "'" + HOSTILE.replace("'", "'\\''") + "'"
                ward("call", "--socket", socket, "--call-id", HOSTILE, "shell", "--arg", "command=" + command, cwd=place)
            finally:
                serve.send_signal(signal.SIGTERM)
                serve.wait(timeout=30)
        html = os.path.join(self.root, "hostile.html")
        ward("ledger", "report", "--run", "hostile", "--html", html, cwd=place)
        page, _ = self.open(html)
        self.click_row(page, 0)
        time.sleep(0.2)  # an injected handler (img onerror) would have run by now
        self.assertIsNone(page.evaluate("window.pwned === undefined ? null : window.pwned"))
        self.assertEqual(page.evaluate("document.title"), "ward report: hostile")
        self.assertEqual(page.evaluate("document.querySelectorAll('img, script:not([id]):not([type])').length"), 1)  # the page's own script
        outputs: list[Any] = page.evaluate("[...document.querySelectorAll('#details pre')].map(e => e.textContent)")
        self.assertIn(HOSTILE, outputs)  # stdout, as text
        self.assertEqual(page.evaluate("document.querySelector('#details .call-id').textContent"), HOSTILE)

    def test_ten_thousand_calls(self) -> None:
        ledger = os.path.join(self.root, "big.sqlite")
        torture = os.path.join(os.path.dirname(WARD), "ward-torture")
        subprocess.run([torture, "fill", ledger, "big", "10000"], check=True, capture_output=True)
        html = os.path.join(self.root, "big.html")
        t0 = time.monotonic()
        ward("ledger", "report", "--ledger", ledger, "--html", html)
        generated = time.monotonic() - t0
        size = os.path.getsize(html)
        self.assertLessEqual(size, 5_000_000)
        page, seconds = self.open(html)
        print(f"\n  report of 10,000 calls: generated in {generated:.2f} s (this build), {size / 1e6:.2f} MB, opened in {seconds:.2f} s",
              file=sys.stderr)
        self.assertLess(seconds, 10)
        self.assertEqual(page.evaluate("document.getElementById('call-count').textContent"), "10000 calls")
        # Only the rows in view are in the DOM: the page stays light however long the run.
        self.assertLess(page.evaluate("document.getElementsByTagName('*').length"), 1500)
        self.click_row(page, 9999)
        self.assertIn("c9999", page.evaluate("document.getElementById('details').innerText"))
        self.assertIn("failed 200", page.evaluate("document.getElementById('legend').innerText"))


if __name__ == "__main__":
    unittest.main()
