#!/usr/bin/env python3
"""Runs every benchmark and collects what they print.

Each bench_* program (and bench_python.py) prints its figures as lines
"BENCH_JSON {...}" (bench/bench_util.h). This script runs them all, then the
flash sale (1,000 coupons, one hot product) at 500 virtual users with think
time (`shopcore simulate --json`, p95 per operation), and writes

    bench/results/results.json   every record, with the machine and commit
    bench/results/results.md     the tables
    bench/results/throughput.svg throughput against caller threads

and a 3-minute run of it (--tail-duration, issue 17) that prints the
maximum latency of any operation and the count of commits over 20 ms.

usage: bench/run_all.py [--build DIR] [--seconds S] [--sim-duration S]
       [--sim-users N] [--tail-duration S] [--only NAME]   (stdlib only)
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def bench_lines(cmd, env=None):
    """Runs one benchmark, echoing it, and returns its BENCH_JSON records."""
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        sys.stdout.write(p.stderr)
        print(f"FAILED ({p.returncode}): {cmd[0]}", flush=True)
    records = []
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON "):])
            # What bounded a run (bu_print_writer) belongs to the run just
            # printed.
            if "bound" in r and records and "bench" in records[-1]:
                records[-1]["writer"] = r
            elif "hops" in r and records and "bench" in records[-1]:
                records[-1]["hops"] = r
            elif "bench" in r:
                records.append(r)
    return records, p.returncode


def simulate(build, users, duration, think, tail=False):
    """The flash-sale scenario; one record per operation with its p95. tail: the
    long variant (issue 17), named by its duration, which prints the maximum
    latency of any operation and the commits of 20 ms or more."""
    exe = os.path.join(build, "cli", "shopcore")
    if not os.path.exists(exe):
        print(f"no {exe}: simulate skipped")
        return [], 0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, "simulate", "--users", str(users), "--duration",
               str(duration), "--think", str(think), "--json", "--db",
               os.path.join(tmp, "shop.db")]
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"FAILED ({p.returncode}): simulate: {p.stderr}")
        return [], p.returncode
    j = json.loads(p.stdout)
    variant = f"{users}_users_think_{think}ms"
    if tail:
        variant += f"_{duration}s"
    out = [{"bench": "simulate", "variant": variant, "op": name,
            "threads": users, "ops": o["requests"],
            "ops_per_s": o["requests"] / j["elapsed_s"], "p50_ms": o["p50_ms"],
            "p95_ms": o["p95_ms"], "p99_ms": o["p99_ms"],
            "max_ms": o["max_ms"], "errors": o["errors"]}
           for name, o in j["operations"].items()]
    out.append({"bench": "simulate", "variant": variant, "op": "all",
                "threads": users, "ops": j["requests"],
                "ops_per_s": j["requests_per_s"], "errors": j["errors"],
                "verify_ok": j["verify"]["ok"],
                "peak_rss_kib": j["peak_rss_kib"],
                "batch_size_p50": j["library"]["batch_size_p50"],
                "max_ms": max(o["max_ms"] for o in j["operations"].values()),
                "commit_max_ms": j["library"]["commit_max_ms"],
                "slow_commits": j["library"]["slow_commits"]})
    for name, o in j["operations"].items():
        print(f"  {name:13s} p95 {o['p95_ms']:.3f} ms  p99 {o['p99_ms']:.3f}"
              f" ms  ({o['requests']} requests)")
    a = out[-1]
    print(f"  max latency {a['max_ms']:.1f} ms (any operation), commit max"
          f" {a['commit_max_ms']:.1f} ms, {a['slow_commits']} commits over"
          f" {j['library']['slow_commit_ms']:.0f} ms")
    return out, 0


BOUNDS_BEGIN = "<!-- bounds: written by bench/run_all.py --readme -->"
BOUNDS_END = "<!-- bounds: end -->"


def bounds_table(records, meta):
    """One row per run that printed what bounded it (bu_print_writer)."""
    rows = [r for r in records if "writer" in r]
    if not rows:
        return []
    lines = [f"{meta['date']}, commit {meta['commit']}, {meta['cpus']} CPUs,"
             f" load average {meta['load']}, `bench/run_all.py --seconds"
             f" {meta['seconds_per_point']}`.", "",
             "| bench | variant | threads | ops/s | writer us per op |"
             " writer CPU use | fsync share | writer waiting for a CPU |"
             " batch mean | wake-ups per op | bound |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        w = r["writer"]
        lines.append(f"| {r['bench']} | {r['variant']} | {r['threads']} |"
                     f" {r['ops_per_s']:.0f} | {w['writer_us_per_op']:.2f}"
                     f" ({w['kind']}) | {100 * w['writer_cpu_use']:.0f}% |"
                     f" {100 * w.get('fsync_share', 0):.0f}% |"
                     f" {100 * w.get('runnable_share', 0):.0f}% |"
                     f" {w['batch_mean']:.1f} |"
                     f" {w.get('wakeups_per_op', 0):.2f} | {w['bound']} |")
    return lines


def readme_update(path, records, meta):
    """Replaces the marked section of bench/README.md with the bounds table."""
    with open(path) as f:
        text = f.read()
    if BOUNDS_BEGIN not in text or BOUNDS_END not in text:
        print(f"{path}: no bounds markers; not updated")
        return
    head, rest = text.split(BOUNDS_BEGIN, 1)
    _, tail = rest.split(BOUNDS_END, 1)
    body = "\n".join(bounds_table(records, meta))
    with open(path, "w") as f:
        f.write(f"{head}{BOUNDS_BEGIN}\n{body}\n{BOUNDS_END}{tail}")
    print(f"updated {path} (what bounds each run)")


def markdown(records, meta):
    lines = [f"# Benchmark results", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['cpus']} CPUs."
             " Figures from one shared, noisy machine: compare within a run.",
             "", "| bench | variant | threads | ops/s | p50 ms | p95 ms |"
             " p99 ms | errors |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if "ratio" in r or r["bench"] == "simulate":
            continue
        lines.append(f"| {r['bench']} | {r['variant']} | {r['threads']} |"
                     f" {r['ops_per_s']:.0f} | {r['p50_ms']:.3f} |"
                     f" {r['p95_ms']:.3f} | {r['p99_ms']:.3f} |"
                     f" {r.get('errors', 0)} |")
    ratios = [r for r in records if "ratio" in r]
    if ratios:
        lines += ["", "| ratio | bench | threads | value |", "|---|---|---:|---:|"]
        lines += [f"| {r['ratio']} ({r['numerator']}/{r['denominator']}) |"
                  f" {r['bench']} | {r['threads']} | {r['value']:.2f}x |"
                  for r in ratios]
    bounds = bounds_table(records, meta)
    if bounds:
        lines += ["", "## What bounds each run", ""] + bounds
    sims = [r for r in records if r["bench"] == "simulate" and r["op"] != "all"]
    if sims:
        lines += ["", "## shopcore simulate (the flash sale: 1,000 coupons, one hot product)", "",
                  "Client-side latency of each operation, submission to"
                  " durable commit. An earlier system of the same shop at 500"
                  " users: p95 1,156"
                  " to 2,933 ms.", "",
                  "| variant | operation | requests | p50 ms | p95 ms |"
                  " p99 ms | max ms |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['variant']} | {r['op']} | {r['ops']} |"
                  f" {r['p50_ms']:.3f} | {r['p95_ms']:.3f} |"
                  f" {r['p99_ms']:.3f} | {r['max_ms']:.3f} |" for r in sims]
        for r in records:
            if r["bench"] == "simulate" and r["op"] == "all":
                lines.append(f"\n{r['variant']}: {r['ops']} requests,"
                             f" {r['ops_per_s']:.0f}/s, {r['errors']} errors,"
                             f" verify {'ok' if r['verify_ok'] else 'FAILED'},"
                             f" writer batch size p50 {r['batch_size_p50']:.0f},"
                             f" max latency {r['max_ms']:.1f} ms,"
                             f" {r['slow_commits']} commits over 20 ms")
    return "\n".join(lines) + "\n"


VARIANT_COLORS = {"group_commit": "#1971c2", "batch_max_1": "#e8590c",
                  "plain_sqlite": "#2b8a3e", "python": "#c2255c"}
OTHER_COLORS = ["#5f3dc4", "#0c8599", "#e67700", "#495057"]


def svg_chart(records):
    """Throughput against caller threads: one small chart per benchmark, a
    line per variant (same colour everywhere), log2 threads and log10 ops/s.
    A point measured twice (bench_python re-measures the C baseline) is
    drawn once, from the first program that printed it."""
    import math
    panels = {}
    for r in records:
        if "ratio" in r or r["bench"] == "simulate" or r["ops_per_s"] <= 0:
            continue
        pts = panels.setdefault(r["bench"], {}).setdefault(r["variant"], {})
        pts.setdefault(r["threads"], r["ops_per_s"])
    variants = sorted({v for p in panels.values() for v in p})
    colors = {}
    for v in variants:
        colors[v] = VARIANT_COLORS.get(v) or OTHER_COLORS[
            len([c for c in colors if c not in VARIANT_COLORS]) % 4]
    threads = sorted({t for p in panels.values() for s in p.values()
                      for t in s}) or [1]
    rates = [v for p in panels.values() for s in p.values()
             for v in s.values()] or [1]
    y0 = math.floor(math.log10(min(rates)))
    y1 = max(math.ceil(math.log10(max(rates))), y0 + 1)
    x0, x1 = math.log2(threads[0]), max(math.log2(threads[-1]), 1)
    cols, PW, PH, L, T = 2, 330, 200, 70, 70
    rows = (len(panels) + cols - 1) // cols
    W, H = cols * (PW + L + 20) + 20, T + rows * (PH + 70)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}'"
           " font-family='sans-serif' font-size='11'>",
           "<rect width='100%' height='100%' fill='white'/>",
           "<text x='20' y='22' font-size='15' font-weight='bold'>Throughput"
           " against caller threads (ops/s, log scales)</text>"]
    for k, v in enumerate(variants):
        out.append(f"<rect x='{20 + 130 * k}' y='34' width='12' height='12'"
                   f" fill='{colors[v]}'/><text x='{36 + 130 * k}' y='44'>"
                   f"{v}</text>")
    for n, (bench, series) in enumerate(sorted(panels.items())):
        left = 20 + L + (n % cols) * (PW + L + 20)
        top = T + (n // cols) * (PH + 70) + 20

        def px(t):
            return left + PW * (math.log2(t) - x0) / ((x1 - x0) or 1)

        def py(v):
            return top + PH - PH * (math.log10(v) - y0) / (y1 - y0)

        out.append(f"<text x='{left}' y='{top - 8}' font-size='13'"
                   f" font-weight='bold'>{bench}</text>")
        for e in range(y0, y1 + 1):
            out.append(f"<line x1='{left}' y1='{py(10 ** e):.1f}'"
                       f" x2='{left + PW}' y2='{py(10 ** e):.1f}'"
                       f" stroke='#ddd'/><text x='{left - 6}'"
                       f" y='{py(10 ** e) + 4:.1f}' text-anchor='end'>"
                       f"{10 ** e:g}</text>")
        for t in threads:
            out.append(f"<text x='{px(t):.1f}' y='{top + PH + 16}'"
                       f" text-anchor='middle'>{t}</text>")
        out.append(f"<text x='{left + PW / 2}' y='{top + PH + 32}'"
                   " text-anchor='middle'>caller threads</text>")
        for v, pts in sorted(series.items()):
            pts = sorted(pts.items())
            poly = " ".join(f"{px(t):.1f},{py(r):.1f}" for t, r in pts)
            out.append(f"<polyline fill='none' stroke='{colors[v]}'"
                       f" stroke-width='2' points='{poly}'/>")
            out += [f"<circle cx='{px(t):.1f}' cy='{py(r):.1f}' r='3.5'"
                    f" fill='{colors[v]}'><title>{bench} {v} {t} threads:"
                    f" {r:.0f} ops/s</title></circle>" for t, r in pts]
    out.append("</svg>")
    return "\n".join(out) + "\n"


def git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short",
                               "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--sim-users", type=int, default=500)
    p.add_argument("--sim-duration", type=int, default=20)
    p.add_argument("--sim-think", type=int, default=100)
    p.add_argument("--tail-duration", type=int, default=180,
                   help="the long simulate run (tail latency); 0 = skip")
    p.add_argument("--only", help="run only benchmarks whose name has this"
                   " (several: comma-separated)")
    p.add_argument("--readme", action="store_true",
                   help="also write the what-bounds-it table into"
                   " bench/README.md")
    a = p.parse_args()
    build = os.path.abspath(a.build)
    only = a.only.split(",") if a.only else None

    def wanted(name):
        """Whether --only selects a run: a program by its path, the others
        by their names (bench_python, simulate, simulate_tail)."""
        return only is None or any(w and w in name for w in only)
    records, failed = [], 0
    env = dict(os.environ, SC_BUILD_DIR=build)
    for exe in sorted(glob.glob(os.path.join(build, "bench", "bench_*"))):
        if not os.access(exe, os.X_OK) or not wanted(exe):
            continue
        r, rc = bench_lines([exe, "--seconds", str(a.seconds)], env)
        records += r
        failed += rc != 0
    py = os.path.join(HERE, "bench_python.py")
    if os.path.exists(py) and wanted("bench_python"):
        r, rc = bench_lines([sys.executable, py, "--build", build,
                             "--seconds", str(a.seconds)], env)
        records += r
        failed += rc != 0
    if wanted("simulate"):
        r, rc = simulate(build, a.sim_users, a.sim_duration, a.sim_think)
        records += r
        failed += rc != 0
    if a.tail_duration > 0 and wanted("simulate_tail"):
        r, rc = simulate(build, a.sim_users, a.tail_duration, a.sim_think,
                         tail=True)
        records += r
        failed += rc != 0
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "commit": git_commit(), "cpus": os.cpu_count(),
            "seconds_per_point": a.seconds,
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"meta": meta, "records": records}, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(records, meta))
    with open(os.path.join(out, "throughput.svg"), "w") as f:
        f.write(svg_chart(records))
    if a.readme:
        readme_update(os.path.join(HERE, "README.md"), records, meta)
    print(f"wrote {out}/results.json, results.md, throughput.svg"
          f" ({len(records)} records, {failed} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
