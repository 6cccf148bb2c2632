#!/usr/bin/env python3
"""The README's screenshot of `ward ledger report` (Scripts/report-screenshot runs this).

    report_screenshot.py WARD_BINARY OUTPUT.png

Runs the demo (Scripts/demo_site.py: an agent crashed, ward SIGKILLed, the run resumed), writes
the report of its run, opens it in headless Chromium, clicks the publish step (its traced
effects: the programs it ran and the file it appended to) and saves the viewport as a PNG.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

from headless import Browser

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = "publish"  # non-idempotent, so traced: its output, effects and events


def main() -> int:
    ward, output = sys.argv[1], sys.argv[2]
    root = tempfile.mkdtemp(prefix="ward-report-shot-")
    try:
        subprocess.run([sys.executable, os.path.join(HERE, "demo_site.py"), "demo", ward], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "TMPDIR": root})
        work = glob.glob(os.path.join(root, "ward-demo-*", "with-ward"))[0]
        html = os.path.join(root, "report.html")
        subprocess.run([ward, "ledger", "report", "--run", "site", "--html", html], cwd=work, check=True)
        with Browser(width=1280, height=1060) as browser:
            page = browser.new_page()
            page.navigate("file://" + html)
            index = page.evaluate(f"JSON.parse(document.getElementById('ward-data').textContent).calls.findIndex(c => c.tool === {TOOL!r})")
            # The list filtered to the tool, as an operator would look for it, then its row clicked.
            page.evaluate(f"(() => {{ const f = document.getElementById('filter'); f.value = {TOOL!r};"
                          " f.dispatchEvent(new Event('input')); })()")
            time.sleep(0.1)
            box = page.evaluate(f"(() => {{ const r = document.querySelector('#rows .row[data-call=\"{index}\"]').getBoundingClientRect();"
                                " return {x: r.x + r.width / 3, y: r.y + r.height / 2}; })()")
            page.click(box["x"], box["y"])
            time.sleep(0.1)
            if page.errors:
                print(f"report_screenshot: the page reported errors: {page.errors}", file=sys.stderr)
                return 1
            png = page.screenshot()
        with open(output, "wb") as f:
            f.write(png)
        print(f"report_screenshot: wrote {output} ({len(png) // 1024} KiB)")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
