#!/usr/bin/env python3
"""The shopcore command line, end to end: simulate's report adds up (text,
JSON, HTML and the library's own metrics agree), repair and verify on a
database corrupted on purpose, a backup taken while a simulation writes,
--help everywhere, every subcommand's bad input (exit status, one line
on stderr, database unchanged), and the conventions every command shares:
--db, bare ids from the commands that create, ISO 8601 times in text and
milliseconds behind --json.

usage: test_cli.py SHOPCORE_BINARY  (stdlib only)"""
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

SHOPCORE = None


def run(*args, cwd=None, timeout=120):
    return subprocess.run([SHOPCORE, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def snapshot(path):
    """Every row of every table, to prove a database did not change."""
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in tables}
    finally:
        con.close()


class Dir(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(
            dir=os.environ.get("SC_TEST_TMPDIR"))
        self.dir = self.tmp.name
        self.db = os.path.join(self.dir, "shop.db")

    def tearDown(self):
        self.tmp.cleanup()

    def ok(self, *args, **kw):
        r = run(*args, **kw)
        self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}{r.stdout}")
        return r.stdout

    def make_shop(self):
        """A small consistent shop made through the command line."""
        self.ok("init", "--db", self.db)
        self.ok("product", "add", "kettle", "--price", "1000", "--stock",
                "10", "--db", self.db)
        self.ok("coupon", "create", "flash", "--max", "5", "--discount",
                "100", "--db", self.db)
        self.ok("account", "deposit", "1", "10000", "--db", self.db)


class Simulate(Dir):
    def test_counts_add_up_in_text_json_html_and_metrics(self):
        text = self.ok("simulate", "--users", "50", "--duration", "3",
                       "--db", self.db, cwd=self.dir)
        fields = dict(re.findall(r"^\s+(\w[\w ]*?)\.{3,}: (\d+)", text, re.M))
        req = int(fields["requests"])
        self.assertGreater(req, 0)
        self.assertEqual(int(fields["succeeded"]) + int(
            fields["expected outcomes"]) + int(fields["errors"]), req)
        statuses = re.findall(r"^    (SC_\w+)\s+(\d+)", text, re.M)
        self.assertEqual(sum(int(n) for _, n in statuses), req)
        ops = re.findall(r"^  (\w+)\s+(\d+) +(\d+) +(\d+) +(\d+) +[\d.]+",
                         text, re.M)
        self.assertEqual(len(ops), 6)
        self.assertEqual(sum(int(o[1]) for o in ops), req)
        for name, n, ok, exp, err in ops:
            self.assertEqual(int(ok) + int(exp) + int(err), int(n), name)
        self.assertIn("verify: ok", text)

        # The same run as JSON, HTML and Prometheus text: the same numbers.
        html = os.path.join(self.dir, "r.html")
        prom = os.path.join(self.dir, "m.prom")
        out = self.ok("simulate", "--users", "50", "--duration", "3",
                      "--json", "--report", html, "--metrics", prom,
                      "--db", os.path.join(self.dir, "fresh.db"), cwd=self.dir)
        j = json.loads(out)
        # Every successful write wrote one event, which the worker delivered
        # (or which was still pending when the run ended).
        ops = j["operations"]
        writes = sum(ops[o]["ok"] for o in ("deposit", "coupon_issue",
                                             "checkout", "pay", "cancel"))
        self.assertEqual(j["outbox"]["delivered"] +
                         j["outbox"]["pending_at_end"], writes)
        self.assertEqual(j["outbox"]["dead_at_end"], 0)
        # The delivered events can be purged; the pending ones stay, and
        # the file still verifies.
        fresh = ["--db", os.path.join(self.dir, "fresh.db")]
        purged = self.ok("outbox", "purge", "--before", "0ms", *fresh)
        n = int(re.search(r"purged (\d+) delivered", purged).group(1))
        self.assertGreaterEqual(n, j["outbox"]["delivered"] - 1)
        self.assertIn("purged 0 ", self.ok("outbox", "purge", "--before",
                                          "0ms", *fresh))
        self.assertIn(f"{j['outbox']['pending_at_end']} pending",
                      self.ok("outbox", "list", *fresh))
        self.assertIn("ok", self.ok("verify", *fresh))
        self.assertEqual(j["succeeded"] + j["expected"] + j["errors"],
                         j["requests"])
        self.assertEqual(sum(j["statuses"].values()), j["requests"])
        self.assertEqual(sum(o["requests"] for o in j["operations"].values()),
                         j["requests"])
        self.assertEqual(sum(t["ok"] + t["expected"] + t["errors"]
                             for t in j["timeline"]), j["requests"])
        self.assertTrue(j["verify"]["ok"])
        self.assertEqual(j["scenario"]["users"], 50)
        for o in j["operations"].values():
            if o["requests"]:
                self.assertLessEqual(o["p50_ms"], o["p95_ms"])
                self.assertLessEqual(o["p95_ms"], o["p99_ms"])
                self.assertLessEqual(o["p99_ms"], o["max_ms"])
        cells = re.findall(r"<td>([^<]*)</td>", read(html))
        self.assertEqual([int(c) for c in cells[:4]],
                         [j["requests"], j["succeeded"], j["expected"],
                          j["errors"]])
        # The library counted every write the virtual users made.
        lib = {}
        for m in re.finditer(r'^shopcore_operations_total\{op="(\w+)",'
                             r'status="(\w+)",outcome="\w+"\} (\d+)$',
                             read(prom), re.M):
            lib[m[1]] = lib.get(m[1], 0) + int(m[3])
        for op, lib_op in (("coupon_issue", "coupon_issue"),
                           ("checkout", "checkout"), ("pay", "order_pay"),
                           ("deposit", "account_deposit")):
            self.assertEqual(lib.get(lib_op, 0),
                             j["operations"][op]["requests"], op)

    def test_a_second_run_reuses_the_file(self):
        for _ in range(2):
            out = self.ok("simulate", "--users", "4", "--duration", "1",
                          "--think", "0", "--json", "--coupons", "10",
                          "--db", self.db)
            j = json.loads(out)
            self.assertTrue(j["verify"]["ok"])
            self.assertEqual(j["statuses"].get("SC_OK", 0) > 0, True)
        policies = snapshot(self.db)["sc_coupon_policy"]
        self.assertEqual(len(policies), 2)
        self.assertTrue(all(p[3] == 10 for p in policies))  # sold out

    def test_backup_taken_while_simulating_verifies(self):
        sim = subprocess.Popen([SHOPCORE, "simulate", "--users", "20",
                                "--duration", "6", "--think", "5",
                                "--db", self.db], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            # Back up once the simulation is writing orders.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.2)
                if (os.path.exists(self.db) and "sc_order" in snapshot(self.db)
                        and snapshot(self.db)["sc_order"]):
                    break
            copy = os.path.join(self.dir, "copy.db")
            self.ok("backup", "--db", self.db, copy)
            self.assertIn("verify: ok", self.ok("verify", "--db", copy))
            orders = len(snapshot(copy)["sc_order"])
            self.assertGreater(orders, 0)
        finally:
            out, err = sim.communicate(timeout=60)
        self.assertEqual(sim.returncode, 0, err)
        self.assertGreater(len(snapshot(self.db)["sc_order"]), orders)


class Repair(Dir):
    def corrupt(self):
        """Coupons past the cap, counters off, a hold of a missing order."""
        con = sqlite3.connect(self.db)
        con.executescript(
            "INSERT INTO sc_coupon(policy_id, user_id, issued_at_ms) VALUES"
            " (1, 9000000001, 9e15), (1, 9000000002, 9e15 + 1),"
            " (1, 9000000003, 9e15 + 2);"
            "UPDATE sc_coupon_policy SET issued_count = issued_count - 2;"
            "UPDATE sc_product SET reserved = reserved + 3 WHERE id = 2;"
            "UPDATE sc_account SET held = held + 500"
            " WHERE user_id = (SELECT min(user_id) FROM sc_account);"
            "INSERT INTO sc_order_line(order_id, product_id, qty, price)"
            " VALUES (999999, 1, 4, 1000);")
        con.commit()
        con.close()

    def test_dry_run_changes_nothing_then_repair_fixes_everything(self):
        # A real sale first: five coupons issued with their events, orders.
        out = self.ok("simulate", "--users", "2", "--duration", "2",
                      "--think", "0", "--coupons", "5", "--json",
                      "--db", self.db)
        self.assertGreater(json.loads(out)["statuses"].get("SC_SOLD_OUT", 0),
                           0)
        db = ["--db", self.db]
        # An order's deadline: ISO 8601 in text, the same instant in ms
        # behind --json.
        order = json.loads(self.ok("order", "show", "1", "--json", *db))
        text = self.ok("order", "show", "1", *db)
        at = re.search(r"expires at (\S+Z)$", text.strip())
        self.assertIsNotNone(at, text)
        self.assertEqual(iso_ms(at[1]), order["expires_at_ms"])
        self.assertIn(order["status"], ("PENDING", "CONFIRMED", "CANCELLED",
                                        "EXPIRED"))
        self.corrupt()
        r = run("verify", *db)
        self.assertEqual(r.returncode, 1)
        self.assertIn("issued_count 3, coupons 8, max_count 5", r.stdout)
        before = snapshot(self.db)
        dry = self.ok("repair", *db, "--dry-run")
        self.assertEqual(snapshot(self.db), before)
        self.assertIn("dry run: 7 change(s) listed, none made", dry)
        out = self.ok("repair", *db)
        self.assertEqual(out.split("repaired:")[0], dry.split("dry run:")[0])
        for pattern in (r"order 999999: removed the lines",
                        r"revoked coupon \d+ of user 9000000003",
                        r"revoked coupon \d+ of user 9000000002",
                        r"revoked coupon \d+ of user 9000000001",
                        r"policy 1: issued_count 3 -> 5",
                        r"product 2: reserved (\d+) -> (\d+)",
                        r"user \d+: balance (\d+) -> \1, held \d+ -> \d+",
                        r"repaired: 7 change\(s\)", r"verify: ok"):
            self.assertRegex(out, pattern)
        m = re.search(r"product 2: reserved (\d+) -> (\d+)", out)
        self.assertEqual(int(m[1]) - int(m[2]), 3)
        self.assertIn("verify: ok", self.ok("verify", *db))
        self.assertIn("nothing to repair", self.ok("repair", *db))
        # The form of 0.x, the database as a positional, still works, with
        # a warning on stderr.
        r = run("repair", self.db)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("nothing to repair", r.stdout)
        self.assertIn("deprecated, use --db", r.stderr)


class Usage(Dir):
    COMMANDS = [["simulate"], ["verify"], ["repair"], ["init"],
                ["product", "add"], ["product", "restock"], ["product", "show"],
                ["coupon", "create"], ["coupon", "pause"], ["coupon", "resume"],
                ["coupon", "show"], ["account", "deposit"], ["account", "show"],
                ["order", "show"], ["outbox", "list"], ["outbox", "dead"],
                ["outbox", "requeue"], ["outbox", "purge"], ["stats"],
                ["metrics"], ["backup"], ["product"],
                ["coupon"], ["account"], ["order"], ["outbox"]]

    def test_help_everywhere(self):
        self.assertIn("simulate", self.ok("--help"))
        for cmd in self.COMMANDS:
            out = self.ok(*cmd, "--help")
            self.assertRegex(out, r"usage", cmd)
            # Every command works on --db (groups list it per subcommand).
            self.assertIn("--db PATH", out, cmd)
            # Help describes the scenario itself, in words a newcomer knows.
            for word in ("seeds", "k6", "closed loop"):
                self.assertNotIn(word, out.lower(), cmd)
        self.assertIn("integrity_check", self.ok("verify", "--help"))
        self.assertIn("dead", self.ok("outbox", "--help"))

    def test_bad_input_is_one_line_and_changes_nothing(self):
        self.make_shop()
        db = ["--db", self.db]
        cases = [
            (["nosuch"], 2, "unknown command"),
            (["product", "nosuch"], 2, "unknown subcommand"),
            (["product", "add", "x", "--price", "-1", "--stock", "1", *db], 2,
             "out of range"),
            (["product", "add", "x", "--price", "abc", "--stock", "1", *db], 2,
             "not an integer"),
            (["product", "add", "x", "--stock", "1", *db], 2, "--price"),
            (["product", "add", "", "--price", "1", "--stock", "1", *db], 2,
             "empty"),
            (["product", "restock", "1", "0", *db], 2, "out of range"),
            (["product", "restock", "42", "5", *db], 1, "SC_NOT_FOUND"),
            (["product", "show", "1", "2", *db], 2, "unexpected argument"),
            (["product", "show", "x", *db], 2, "not an integer"),
            (["coupon", "create", "c", *db], 2, "--max is needed"),
            (["coupon", "create", "c", "--max", "5", "--discount", "1",
              "--percent", "5", *db], 2, "exclusive"),
            (["coupon", "create", "c", "--max", "5", "--percent", "101", *db],
             2, "out of range"),
            (["coupon", "create", "c", "--max", "5", "--starts", "10",
              "--ends", "5", *db], 1, "SC_INVALID"),
            (["coupon", "create", "c", "--max", "5", "--starts",
              "2026-02-30", *db], 2, "neither ms since the epoch nor"),
            (["coupon", "create", "c", "--max", "5", "--starts",
              "2026-12-01T25:00Z", *db], 2, "ISO 8601"),
            (["coupon", "create", "c", "--max", "5", "--ends",
              "1969-12-31T23:59:59Z", *db], 2, "is before"),
            (["coupon", "create", "c", "--max", "5", "--starts",
              "2026-12-01T10:00:00+01:00", "--ends", "2026-12-01T09:00Z",
              *db], 1, "SC_INVALID"),
            (["coupon", "pause", "9", *db], 1, "SC_NOT_FOUND"),
            (["coupon", "resume", *db], 2, "missing"),
            (["coupon", "show", "0", *db], 2, "out of range"),
            (["account", "deposit", "1", "0", *db], 2, "out of range"),
            (["account", "deposit", "1", "5", "--key", "k", *db], 0, ""),
            (["account", "deposit", "1", "6", "--key", "k", *db], 1,
             "SC_IDEMPOTENCY_MISMATCH"),
            (["account", "show", "77", *db], 1, "SC_NOT_FOUND"),
            # The library's limits: names and keys of at most 255 bytes.
            (["product", "add", "n" * 256, "--price", "1", "--stock", "1",
              *db], 1, "longer than 255 bytes"),
            (["coupon", "create", "n" * 256, "--max", "5", *db], 1,
             "longer than 255 bytes"),
            (["account", "deposit", "1", "5", "--key", "k" * 256, *db], 1,
             "SC_INVALID"),
            (["account", "deposit", "1", "5", "--key", "k" * 255, *db], 0,
             ""),
            (["order", "show", "5", *db], 1, "SC_NOT_FOUND"),
            (["outbox", "dead", "--limit", "0", *db], 2, "out of range"),
            (["outbox", "requeue", *db], 2, "either ID or --all"),
            (["outbox", "requeue", "123", *db], 1, "SC_NOT_FOUND"),
            (["outbox", "purge", *db], 2, "give --before"),
            (["outbox", "purge", "--before", "7x", *db], 2, "neither"),
            (["outbox", "purge", "--before", "-5", *db], 2, "neither"),
            (["outbox", "purge", "--before", "5h", "--json=1", *db], 2,
             "takes no value"),
            (["metrics", "--json", *db], 2, "unknown option --json"),
            (["stats", "--bogus", *db], 2, "unknown option --bogus"),
            (["stats", "--db"], 2, "needs a value"),
            (["init", "--db", os.path.join(self.dir, "no/such/dir.db")], 1,
             "SC_IOERR"),
            (["verify", "--db", os.path.join(self.dir, "absent.db")], 1,
             "no such database"),
            (["verify", *db, "extra"], 2, "unexpected argument 'extra'"),
            (["repair", *db, "--dry-run=yes"], 2, "takes no value"),
            (["backup", *db], 2, "DEST is missing"),
            (["backup", *db, "a.db", "b.db"], 2, "unexpected argument"),
            (["backup", *db, self.db], 1, "SC_EXISTS"),
            (["simulate", "--users", "0", *db], 2, "out of range"),
            (["simulate", "--hot", "1.5", *db], 2, "out of range"),
            (["simulate", "--durability", "fast", *db], 2, "neither"),
            (["simulate", "--report", "r.pdf", *db], 2, ".html or .svg"),
            (["simulate", "--duration", "1x", *db], 2, "not an integer"),
        ]
        for args, code, message in cases:
            before = snapshot(self.db)
            r = run(*args, cwd=self.dir)
            self.assertEqual(r.returncode, code, f"{args}: {r.stderr}")
            if code != 0:
                self.assertEqual(r.stderr.count("\n"), 1, f"{args}: {r.stderr}")
                self.assertTrue(r.stderr.startswith("shopcore"), r.stderr)
                self.assertIn(message, r.stderr, args)
                self.assertEqual(snapshot(self.db), before, args)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "absent.db")))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "shop.db-x")))

    def test_admin_commands_do_what_they_say(self):
        self.make_shop()
        db = ["--db", self.db]
        self.assertIn("product 1: +5", self.ok("product", "restock", "1", "5",
                                               *db))
        self.assertIn("total 15, reserved 0, available 15",
                      self.ok("product", "show", "1", *db))
        self.assertIn("paused", self.ok("coupon", "pause", "1", *db))
        self.assertIn("issued 0 of 5, per-user limit 1, paused",
                      self.ok("coupon", "show", "1", *db))
        self.assertIn("issuing", self.ok("coupon", "resume", "1", *db))
        self.assertIn("balance 10000, held 0, available 10000",
                      self.ok("account", "show", "1", *db))
        self.assertIn("0 dead event(s)", self.ok("outbox", "dead", *db))
        self.assertIn("purged 0 delivered event(s)",
                      self.ok("outbox", "purge", "--before", "7d", *db))
        self.assertRegex(self.ok("outbox", "list", *db), r"outbox: \d+ pending")
        # stats: what the database holds, for a person and as JSON; metrics:
        # the same numbers as Prometheus gauges. Neither shows the idle
        # handle's own operation counters.
        stats = self.ok("stats", *db)
        self.assertRegex(stats, r"products +1\n")
        self.assertIn("stock            15 units, 0 reserved", stats)
        self.assertIn("balance 10000, held 0", stats)
        j = json.loads(self.ok("stats", "--json", *db))
        self.assertEqual((j["products"], j["units_total"], j["policies"],
                          j["balance_total"]), (1, 15, 1, 10000))
        metrics = self.ok("metrics", *db)
        self.assertIn("shopcore_db_products 1\n", metrics)
        self.assertIn('shopcore_db_units{state="total"} 15\n', metrics)
        self.assertIn('shopcore_db_money{kind="balance"} 10000\n', metrics)
        for text in (stats, metrics):
            self.assertNotIn("shopcore_operations_total", text)
        self.assertIn("ready, schema up to date", self.ok("init", *db))

    def test_conventions_db_ids_and_times(self):
        db = ["--db", self.db]
        self.ok("init", *db)
        # Commands that create print the bare id, for scripts.
        self.assertEqual(self.ok("product", "add", "a", "--price", "5",
                                 "--stock", "2", *db), "1\n")
        self.assertEqual(self.ok("product", "add", "b", "--price", "5",
                                 "--stock", "2", *db), "2\n")
        # --starts and --ends take ISO 8601 (a zone, or UTC) or epoch ms.
        self.assertEqual(self.ok(
            "coupon", "create", "w", "--max", "3", "--starts",
            "2026-12-01T10:30:00.250+01:00", "--ends", "2026-12-02", *db),
            "1\n")
        self.assertEqual(self.ok(
            "coupon", "create", "v", "--max", "3", "--starts",
            "1796117400250", "--ends", "2026-12-02T00:00", *db), "2\n")
        rows = snapshot(self.db)["sc_coupon_policy"]
        # id, name, ..., starts_at_ms (column 8), ends_at_ms (column 9)
        self.assertEqual([(r[8], r[9]) for r in rows],
                         [(1796117400250, 1796169600000)] * 2)
        # The shows: text, and JSON with the same numbers.
        prod = json.loads(self.ok("product", "show", "2", "--json", *db))
        self.assertEqual({k: prod[k] for k in ("id", "total", "available")},
                         {"id": 2, "total": 2, "available": 2})
        self.assertEqual(json.loads(self.ok("coupon", "show", "1", "--json",
                                            *db))["max_count"], 3)
        self.ok("account", "deposit", "7", "300", *db)
        self.assertEqual(json.loads(self.ok("account", "show", "7", "--json",
                                            *db))["balance"], 300)
        # Outbox times: ISO in text, ms in JSON, for the same event.
        j = json.loads(self.ok("outbox", "list", "--json", *db))
        self.assertGreater(j["pending"], 0)
        text = self.ok("outbox", "list", *db)
        iso = re.search(r"oldest pending created at "
                        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)", text)
        self.assertIsNotNone(iso, text)
        self.assertEqual(iso_ms(iso[1]), j["oldest_pending_ms"])
        p = json.loads(self.ok("outbox", "purge", "--before",
                               "2026-01-01T00:00:00Z", "--json", *db))
        self.assertEqual(p, {"purged": 0, "before_ms": 1767225600000})
        self.assertIn("acked before 2026-01-01T00:00:00.000Z",
                      self.ok("outbox", "purge", "--before", "1767225600000",
                              *db))
        self.assertEqual(json.loads(self.ok("outbox", "dead", "--json", *db)),
                         {"events": []})
        # verify, repair and backup take --db like the rest; the database
        # as a positional still works, with a deprecation warning.
        self.assertIn("verify: ok", self.ok("verify", *db))
        r = run("verify", self.db)
        self.assertEqual((r.returncode, r.stdout), (0, "verify: ok\n"))
        self.assertIn("deprecated, use --db", r.stderr)
        copy = os.path.join(self.dir, "copy.db")
        self.ok("backup", *db, copy)
        self.assertEqual(snapshot(copy), snapshot(self.db))
        self.ok("backup", "--db", copy, os.path.join(self.dir, "copy2.db"))
        # The default database is ./shop.db, for every command.
        self.assertIn("verify: ok", self.ok("verify", cwd=self.dir))
        self.ok("backup", "copy3.db", cwd=self.dir)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "copy3.db")))


def iso_ms(text):
    """ISO 8601 UTC with milliseconds, as ms since the epoch."""
    import datetime
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    t = t.replace(tzinfo=datetime.timezone.utc)
    return round(t.timestamp() * 1000)


if __name__ == "__main__":
    SHOPCORE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
