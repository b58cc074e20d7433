#!/usr/bin/env python3
"""The flash sale over HTTP: http_shop under wrk, next to an earlier system.

For each connection count: a fresh database, http_shop on a free port of
127.0.0.1, the shop created through its API (a hot product with 500 in
stock, 9 others, a 1,000-coupon policy with one coupon per user, a deposit
for every shopper), then wrk runs flash_sale.lua for the duration. Then the
server is stopped with SIGTERM and `shopcore verify` checks the database.

Per-route latency is the server's: wrk's Lua response() callback gets no
per-request latency, so http_shop measures each request from its last byte
read to its answer handed to the socket, into a Prometheus histogram per
route on GET /metrics; this script reads the histograms before and after the
run and interpolates p50/p95/p99 within a bucket (bounds step by 1.25x to
1.5x), like Prometheus's histogram_quantile. wrk's own latency (every
route, client side, queueing in the kernel included) is printed too.

usage: run.py --http-shop BIN --shopcore BIN [--runs 100,500,500/100,...]
              [--duration 30] [--check]
--runs lists connection counts; "500/100" is 500 connections with a think
time of 100 ms before each request (wrk's delay()), the others send flat
out (a closed loop: a connection's next request leaves when its answer
arrives, so latency there is connections / throughput). "500@normal" runs
the server with --durability normal (no fsync per commit); the default is
full.
--check (the test suite's smoke run) exits 1 on any 5xx, any connection
error, an answer that is neither 2xx nor 409, or a failed verify."""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EARLIER = {  # an earlier system of the same shop, the same flash sale over HTTP
    100: "checkout p95 304 ms, coupon p95 35 ms, about 380 requests/s",
    500: "checkout p95 2,933 ms, 99.4% of requests succeeded",
}
# (users, what, the earlier system's figure) for the side-by-side table
EARLIER_ROWS = [(100, "checkout p95 ms", 304), (100, "coupon p95 ms", 35),
                (100, "requests/s", 380), (500, "checkout p95 ms", 2933),
                (500, "success %", 99.4)]
ROUTES = [("browse", "GET /products/{id}"),
          ("coupon", "POST /coupon-policies/{id}/issue"),
          ("checkout", "POST /orders"),
          ("pay", "POST /orders/{id}/pay"),
          ("cancel", "POST /orders/{id}/cancel")]


class Server:
    def __init__(self, binary, db, durability="full"):
        self.proc = subprocess.Popen(
            [binary, "--db", db, "--port", "0", "--listen", "127.0.0.1",
             "--durability", durability],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"http_shop did not start: {line}"
                               f"{self.proc.stderr.read()}")
        self.port = int(m.group(1))

    def cpu_seconds(self):
        """User + system CPU time of the server so far (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


def call(port, method, path, body=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data!r}")
    return json.loads(data) if data.startswith(b"{") else data.decode()


def set_up(port, shoppers):
    hot = call(port, "POST", "/products",
               {"name": "hot", "price": 5000, "stock": 500})["id"]
    others = [call(port, "POST", "/products",
                   {"name": f"item {i}", "price": 1000 + i * 100,
                    "stock": 1_000_000})["id"] for i in range(9)]
    policy = call(port, "POST", "/coupon-policies",
                  {"name": "flash", "max_count": 1000, "per_user_limit": 1,
                   "discount_amount": 500})["id"]

    def deposit(users):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for u in users:
            call(port, "POST", f"/accounts/{u}/deposit",
                 {"amount": 100_000_000}, conn=c)
        c.close()

    users = list(range(1, shoppers + 1))
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(deposit, [users[i::8] for i in range(8)]))
    return hot, others, policy


def library_view(text):
    """The library's own figures (whole run, set-up included): checkout from
    submission to durable completion, operations per commit, commit time."""
    def q(name, label):
        vals = {}
        for m in re.finditer(re.escape(name) + r"\{" + re.escape(label) +
                             r'quantile="([^"]+)"\} ([0-9.e+-]+)', text):
            vals[m[1]] = float(m[2])
        return vals
    co = q("shopcore_operation_duration_seconds", 'op="checkout",')
    bs = q("shopcore_batch_size", "")
    cm = q("shopcore_commit_duration_seconds", "")
    return {"checkout_p95_ms": co.get("0.95", 0) * 1000,
            "batch_p50": bs.get("0.5", 0), "batch_p95": bs.get("0.95", 0),
            "commit_p50_ms": cm.get("0.5", 0) * 1000,
            "commit_p95_ms": cm.get("0.95", 0) * 1000}


def histograms(port, lib=None):
    """{route: (by_code{code: n}, buckets[(le, cumulative)], sum)}."""
    text = call(port, "GET", "/metrics")
    if lib is not None:
        lib.update(library_view(text))
    out = {}
    for line in text.splitlines():
        m = re.match(r'http_shop_requests_total\{route="([^"]+)",'
                     r'code="(\d+)"\} (\d+)', line)
        if m:
            out.setdefault(m[1], ({}, []))[0][m[2]] = int(m[3])
            continue
        m = re.match(r'http_shop_request_duration_seconds_bucket\{'
                     r'route="([^"]+)",le="([^"]+)"\} (\d+)', line)
        if m:
            out.setdefault(m[1], ({}, []))[1].append(
                (float(m[2]), int(m[3])))
    return out


def delta(after, before):
    out = {}
    for route, (codes, buckets) in after.items():
        bc, bb = before.get(route, ({}, []))
        prev = dict(bb)
        out[route] = ({k: v - bc.get(k, 0) for k, v in codes.items()
                       if v - bc.get(k, 0)},
                      [(le, n - prev.get(le, 0)) for le, n in buckets])
    return out


def quantile(buckets, q):
    """histogram_quantile: linear within the bucket holding rank q."""
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    rank, lo, below = q * total, 0.0, 0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return lo * 1000
            return (lo + (le - lo) * (rank - below) / max(n - below, 1)) * 1000
        lo, below = le, n
    return lo * 1000


def wrk(port, ids, conns, seconds, users, think):
    hot, others, policy = ids
    threads = 2 if conns % 2 == 0 else 1
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s",
           "--timeout", "10s", "-s", os.path.join(HERE, "flash_sale.lua"),
           f"http://127.0.0.1:{port}", "--", str(hot),
           ",".join(map(str, others)), str(policy), str(conns), str(users),
           "90", str(threads), str(think)]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       timeout=seconds + 120)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr}{r.stdout}")
    res = {"steps": {}, "errors": {}}
    for line in r.stdout.splitlines():
        f = line.split()
        if not line.startswith("@@ "):
            continue
        if f[1] == "errors":
            res["errors"] = {k: int(v) for k, v in
                             (x.split("=") for x in f[2:])}
        elif f[1] == "requests":
            res["requests"], res["seconds"] = int(f[2]), int(f[4]) / 1e6
        elif f[1] == "latency_ms":
            res["latency"] = {k: float(v) for k, v in
                              (x.split("=") for x in f[2:])}
        else:
            res["steps"].setdefault(f[1], {})[f[2]] = int(f[3])
    return res


def label(res):
    out = f"{res['conns']} connections"
    if res["think"]:
        out += f", think time {res['think']} ms"
    if res["durability"] != "full":
        out += f", durability {res['durability']}"
    return out


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def run_one(args, conns, think, durability, workdir):
    db = os.path.join(workdir, f"flash-{conns}-{think}-{durability}.db")
    srv = Server(args.http_shop, db, durability)
    try:
        ids = set_up(srv.port, conns * args.users)
        load_before = os.getloadavg()[0]
        before = histograms(srv.port)
        cpu = srv.cpu_seconds()
        res = wrk(srv.port, ids, conns, args.duration, args.users, think)
        cpu = srv.cpu_seconds() - cpu
        lib = {}
        after = histograms(srv.port, lib)
        load_after = os.getloadavg()[0]
    finally:
        rc, err = srv.stop()
    verify = subprocess.run([args.shopcore, "verify", "--db", db],
                            capture_output=True, text=True)
    d = delta(after, before)
    res.update(conns=conns, think=think, durability=durability,
               server_cpu_s=cpu, load=(load_before, load_after), library=lib,
               server_exit=rc, server_stderr=err,
               verify_ok=verify.returncode == 0,
               verify=verify.stdout.strip() + verify.stderr.strip())
    res["routes"] = {}
    for _, route in ROUTES:
        codes, buckets = d.get(route, ({}, []))
        res["routes"][route] = {
            "codes": codes, "count": sum(codes.values()),
            "p50": quantile(buckets, .50), "p95": quantile(buckets, .95),
            "p99": quantile(buckets, .99)}
    return res


def report(res):
    c = res["conns"]
    print(f"\n== {label(res)}, {res['seconds']:.0f} s "
          f"(load average {res['load'][0]:.2f} before, "
          f"{res['load'][1]:.2f} after)")
    print(f"{'route':34} {'count':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7}  statuses")
    for _, route in ROUTES:
        r = res["routes"][route]
        codes = " ".join(f"{k}:{v}" for k, v in sorted(r["codes"].items()))
        print(f"{route:34} {r['count']:7d} {fmt(r['p50']):>7} "
              f"{fmt(r['p95']):>7} {fmt(r['p99']):>7}  {codes}")
    lat = res.get("latency", {})
    print(f"all routes, client side (wrk): {res['requests']} requests, "
          f"{res['requests'] / res['seconds']:.0f} requests/s, "
          f"p50 {lat.get('p50', 0):.1f} ms, p95 {lat.get('p95', 0):.1f} ms, "
          f"p99 {lat.get('p99', 0):.1f} ms")
    cpu = res["server_cpu_s"]
    print(f"http_shop used {cpu:.1f} s of CPU ({100 * cpu / res['seconds']:.0f}%"
          f" of one core), {1e6 * cpu / max(res['requests'], 1):.0f} us per "
          f"request, all its threads together")
    lib = res["library"]
    print(f"inside the library: checkout p95 {lib['checkout_p95_ms']:.1f} ms"
          f" (queued to durable), {lib['batch_p50']:.0f} operations per "
          f"commit at p50 ({lib['batch_p95']:.0f} at p95), commit p50 "
          f"{lib['commit_p50_ms']:.1f} ms, p95 {lib['commit_p95_ms']:.1f} ms")
    e = res["errors"]
    print(f"connection errors: connect {e.get('connect')} read "
          f"{e.get('read')} write {e.get('write')} timeout {e.get('timeout')}"
          f"; answers other than 2xx and 409: {bad_answers(res)}")
    if c in EARLIER:
        print(f"an earlier system of the same shop at {c} users: "
              f"{EARLIER[c]}")
    print(f"shopcore verify: {'ok' if res['verify_ok'] else res['verify']}")


def markdown(all_res):
    """One Markdown table of every run, for the README."""
    rows = ["| run | req/s | route | p50 ms | p95 ms | p99 ms | answers |",
            "|---|---:|---|---:|---:|---:|---|"]
    for res in all_res:
        run = f"{label(res)} (load {res['load'][0]:.1f})"
        rate = f"{res['requests'] / res['seconds']:,.0f}"
        for _, route in ROUTES:
            r = res["routes"][route]
            codes = ", ".join(f"{n:,} x {k}" for k, n in
                              sorted(r["codes"].items()))
            rows.append(f"| {run} | {rate} | `{route}` | {fmt(r['p50'])} | "
                        f"{fmt(r['p95'])} | {fmt(r['p99'])} | {codes} |")
            run = rate = ""
    return "\n".join(rows)


def figure(res, what):
    if what == "checkout p95 ms":
        return res["routes"]["POST /orders"]["p95"]
    if what == "coupon p95 ms":
        return res["routes"]["POST /coupon-policies/{id}/issue"]["p95"]
    if what == "requests/s":
        return res["requests"] / res["seconds"]
    # success: answered 2xx or an expected 409, of every request sent
    e = res["errors"]
    sent = res["requests"] + sum(e.get(k, 0) for k in ("connect", "timeout"))
    return 100.0 * (res["requests"] - bad_answers(res) -
                    sum(e.get(k, 0) for k in ("read", "write"))) / max(sent, 1)


def side_by_side(all_res):
    """The earlier system's figures next to this run's, as Markdown."""
    rows = ["| users | figure | earlier system | http_shop | better by |",
            "|---:|---|---:|---:|---:|"]
    for users, what, theirs in EARLIER_ROWS:
        for res in all_res:
            if res["conns"] != users:
                continue
            ours = figure(res, what)
            extra = label(res)[len(f"{users} connections"):]
            if ours is None:
                continue
            if what == "success %":
                better = ""
            elif what == "requests/s":
                better = f"{ours / theirs:.1f}x"
            else:
                better = f"{theirs / max(ours, 0.001):.1f}x"
            rows.append(f"| {users}{extra} | {what} | {theirs:,} | "
                        f"{ours:,.1f} | {better} |")
    return "\n".join(rows)


def bad_answers(res):
    return sum(n for r in res["routes"].values()
               for code, n in r["codes"].items()
               if not (code.startswith("2") or code == "409"))


def failures(res):
    out = []
    e = res["errors"]
    socket = sum(e.get(k, 0) for k in ("connect", "read", "write", "timeout"))
    if socket:
        out.append(f"{socket} connection errors {e}")
    if bad_answers(res):
        out.append(f"{bad_answers(res)} answers neither 2xx nor 409")
    if not res["verify_ok"]:
        out.append(f"verify failed: {res['verify']}")
    if res["server_exit"] != 0:
        out.append(f"http_shop exited {res['server_exit']}: "
                   f"{res['server_stderr']}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--http-shop", required=True)
    ap.add_argument("--shopcore", required=True)
    ap.add_argument("--runs", default="100,500,500/100,500@normal")
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--users", type=int, default=4,
                    help="shoppers per connection (default 4)")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", action="store_true",
                    help="also print one Markdown table of every run")
    ap.add_argument("--dir", help="keep the databases here")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found (scripts/install-deps.sh installs it)")
        return 77
    workdir = args.dir or tempfile.mkdtemp(
        dir=os.environ.get("SC_TEST_TMPDIR"))
    all_res, bad = [], []
    try:
        for spec in args.runs.split(","):
            spec, _, durability = spec.partition("@")
            conns, _, think = spec.partition("/")
            res = run_one(args, int(conns), int(think or 0),
                          durability or "full", workdir)
            report(res)
            all_res.append(res)
            bad += failures(res)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_res, f, indent=1)
    print("\n" + side_by_side(all_res))
    if args.markdown:
        print("\n" + markdown(all_res))
    for b in bad:
        print(f"FAIL: {b}")
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
