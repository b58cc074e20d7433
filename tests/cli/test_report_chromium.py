#!/usr/bin/env python3
"""The --report page of `shopcore simulate`, loaded in headless Chromium with
every network path closed: its SVG charts must be drawn (bars and lines with
real sizes) and it must reference nothing outside itself. Exits 77 (CTest's
SKIP_RETURN_CODE) with a clear message when Chromium is not installed: a
skip, never a pass.

usage: test_report_chromium.py SHOPCORE_BINARY"""
import html.parser
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


class Svgs(html.parser.HTMLParser):
    """Counts the drawn elements inside each <svg>."""

    def __init__(self):
        super().__init__()
        self.svgs = []  # per svg: {"bars": n, "lines": n, "texts": n}
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append({"bars": 0, "lines": 0, "texts": 0})
            self.depth += 1
        elif self.depth and tag == "rect" and "bar" in a.get("class", ""):
            if float(a["width"]) > 0 and float(a["height"]) > 0:
                self.svgs[-1]["bars"] += 1
        elif self.depth and tag == "polyline":
            points = a.get("points", "").split()
            if len(points) >= 2:
                self.svgs[-1]["lines"] += 1
        elif self.depth and tag == "text":
            self.svgs[-1]["texts"] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self.depth -= 1


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def dump_dom(browser, path, tmp):
    profile = tempfile.mkdtemp(dir=tmp)
    r = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}",
         # No network at all: nothing may load from outside the file.
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--dump-dom", "file://" + path],
        capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not r.stdout.strip():
        sys.exit(f"FAIL: chromium could not load {path}: {r.stderr[-2000:]}")
    return r.stdout


def check(dom, label):
    p = Svgs()
    p.feed(dom)
    if not p.svgs:
        sys.exit(f"FAIL: {label}: no <svg> in the loaded page")
    total = {k: sum(s[k] for s in p.svgs) for k in ("bars", "lines", "texts")}
    # Throughput: a line per outcome; percentiles: 3 bars per operation
    # with requests; histograms: at least one bar per such operation.
    if total["lines"] < 3 or total["bars"] < 12 or total["texts"] < 20:
        sys.exit(f"FAIL: {label}: charts not drawn: {total}")
    print(f"ok: {label}: {len(p.svgs)} svg, {total}")


def main():
    shopcore = os.path.abspath(sys.argv[1])
    browser = chromium()
    if browser is None:
        print("SKIPPED: Chromium is not installed (Debian package 'chromium',"
              " scripts/install-deps.sh installs it); the HTML report was NOT"
              " checked in a browser")
        return SKIP
    with tempfile.TemporaryDirectory(
            dir=os.environ.get("SC_TEST_TMPDIR")) as tmp:
        db = os.path.join(tmp, "shop.db")
        for ext in ("html", "svg"):
            report = os.path.join(tmp, f"report.{ext}")
            r = subprocess.run([shopcore, "simulate", "--users", "10",
                                "--duration", "2", "--db", db, "--report",
                                report], capture_output=True, text=True,
                               timeout=120)
            if r.returncode != 0:
                sys.exit(f"FAIL: simulate: {r.stderr}")
            with open(report, encoding="utf-8") as f:
                source = f.read()
            outside = re.findall(r"""(?:src|href)\s*=\s*['"]?[a-z]+:""",
                                 source)
            if outside or "<script" in source or "@import" in source:
                sys.exit(f"FAIL: {ext}: the report references the outside:"
                         f" {outside}")
            check(dump_dom(browser, report, tmp), ext)
    return 0


if __name__ == "__main__":
    sys.exit(main())
