#!/usr/bin/env python3
"""Coupon issuance from Python threads against the C figure, in one run.

For each thread count, the C benchmark (bench_coupon, group commit, durable)
runs first, then the same work from Python threads through the shopcore
package: distinct users, one policy with a cap never reached, for a fixed
time. Prints ops/s, latency percentiles and the ratio Python / C, as a table
and as BENCH_JSON lines. Target: at 16 threads, Python >= 0.5x C.

    bench/bench_python.py [--build DIR] [--seconds S] [--threads 1,16]

DIR is the CMake build directory (default: $SC_BUILD_DIR, else ./build);
its bindings/python holds the package and bench/bench_coupon the C side.
Databases go to $SC_BENCH_DIR (default: the working directory).
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.environ.get("SC_BUILD_DIR") or
                   os.path.join(os.path.dirname(HERE), "build"))
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--threads", default="1,16")
    a = p.parse_args()
    a.threads = [int(t) for t in a.threads.split(",")]
    return a


def run_c(build, threads, seconds):
    """The C figure: bench_coupon's group-commit row for this count."""
    exe = os.path.join(build, "bench", "bench_coupon")
    out = subprocess.run([exe, "--seconds", str(seconds), "--threads",
                          str(threads), "--no-round-trip"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON "):])
            if r.get("variant") == "group_commit" and "ops" in r:
                return r
    raise RuntimeError("no group_commit result from " + exe + ":\n" + out)


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


def run_python(shopcore, threads, seconds):
    """The same work from Python threads, released together."""
    path = os.path.join(os.environ.get("SC_BENCH_DIR") or ".",
                        "bench-python-coupon.db")
    remove_db(path)
    db = shopcore.open(path)
    policy = db.create_policy("bench", max_count=2**62)
    users = itertools.count(1)  # next() is atomic under the GIL
    barrier = threading.Barrier(threads + 1)
    latencies, errors = [], [0]
    lock = threading.Lock()
    deadline = [0.0]

    def caller():
        mine = []
        failed = 0
        clock = time.perf_counter
        issue = db.issue_coupon
        barrier.wait()
        end = deadline[0]
        while True:
            t0 = clock()
            if t0 >= end:
                break
            try:
                issue(policy, next(users))
            except shopcore.Error:
                failed += 1
            mine.append(clock() - t0)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    db.close()
    remove_db(path)
    latencies.sort()
    ops = len(latencies) - errors[0]
    ms = [v * 1000 for v in latencies]
    return {"bench": "coupon_issue", "variant": "python", "threads": threads,
            "ops": ops, "errors": errors[0], "seconds": round(elapsed, 3),
            "ops_per_s": round(ops / elapsed, 1),
            "p50_ms": round(percentile(ms, 0.50), 4),
            "p95_ms": round(percentile(ms, 0.95), 4),
            "p99_ms": round(percentile(ms, 0.99), 4),
            "max_ms": round(ms[-1] if ms else 0.0, 4),
            "mean_ms": round(sum(ms) / len(ms) if ms else 0.0, 4)}


def remove_db(path):
    for suffix in ("", "-wal", "-shm", "-turn"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def show(r):
    print("{:<14} {:<13} {:>7} {:>12,.0f} {:>9.3f} {:>9.3f} {:>9.3f}".format(
        r["bench"], r["variant"], r["threads"], r["ops_per_s"], r["p50_ms"],
        r["p95_ms"], r["p99_ms"]))
    print("BENCH_JSON " + json.dumps(r, separators=(",", ":")))


def main():
    args = parse_args()
    sys.path.insert(0, os.path.join(args.build, "bindings", "python"))
    import shopcore

    print("== coupon issuance from Python threads vs C, durable "
          "(synchronous=FULL), {} s per run".format(args.seconds))
    print("{:<14} {:<13} {:>7} {:>12} {:>9} {:>9} {:>9}".format(
        "bench", "variant", "threads", "ops/s", "p50 ms", "p95 ms", "p99 ms"))
    for n in args.threads:
        c = run_c(args.build, n, args.seconds)
        show(c)
        py = run_python(shopcore, n, args.seconds)
        show(py)
        ratio = py["ops_per_s"] / c["ops_per_s"] if c["ops_per_s"] else 0.0
        print("ratio python/C at {} threads: {:.2f}{}".format(
            n, ratio, "  (target >= 0.50)" if n == 16 else ""))
        print("BENCH_JSON " + json.dumps(
            {"bench": "coupon_issue", "ratio": "python_vs_c", "threads": n,
             "numerator": "python", "denominator": "group_commit",
             "value": round(ratio, 2)}, separators=(",", ":")))


if __name__ == "__main__":
    main()
