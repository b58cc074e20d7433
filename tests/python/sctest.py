"""Helpers shared by the Python test modules (not a test module itself)."""

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import unittest
from typing import Callable, List

import shopcore

# SC_TEST_DB=pg runs the tests against the PostgreSQL server at
# SC_TEST_PG_URI (or libpq's PGHOST, ... as scripts/pg-cluster.sh sets them), each
# test in a schema of its own, dropped afterwards with psql.
PG = os.environ.get("SC_TEST_DB") == "pg"
PG_URI = os.environ.get("SC_TEST_PG_URI") or "postgresql://"
_schemas = itertools.count()

# For the tests of the SQLite file itself (hand edits through sqlite3).
sqlite_only = unittest.skipIf(PG, "edits the SQLite file by hand")


if PG and subprocess.run(["psql", "-q", "-X", "-d", PG_URI, "-c", "SELECT 1"],
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL).returncode != 0:
    # No server: ctest reports the module skipped (77), never passed.
    print("skipped: no PostgreSQL server at " + PG_URI)
    raise SystemExit(77)


def pg_uri() -> str:
    """A URI with a fresh schema on the test server."""
    sep = "&" if "?" in PG_URI else "?"
    return "{}{}schema=py{}_{}".format(PG_URI, sep, os.getpid(),
                                       next(_schemas))


def pg_drop(uri: str) -> None:
    schema = uri.rsplit("schema=", 1)[1]
    subprocess.run(["psql", "-q", "-X", "-d", PG_URI, "-c",
                    "SET client_min_messages = warning;"
                    " DROP SCHEMA IF EXISTS {} CASCADE".format(schema)],
                   check=True)


class DbTestCase(unittest.TestCase):
    """A test case with a fresh database file per test, removed afterwards;
    every test ends by checking that sc_verify holds (unless it closed the
    database itself)."""

    open_options: dict = {}

    def setUp(self) -> None:
        base = os.environ.get("SC_TEST_TMPDIR") or None
        if base:
            os.makedirs(base, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="pytest-", dir=base)
        self.path = pg_uri() if PG else os.path.join(self.dir, "shop.db")
        self.db = self.open_db()

    def open_db(self, **options) -> shopcore.Database:
        opts = dict(self.open_options)
        opts.update(options)
        return shopcore.open(self.path, **opts)

    def tearDown(self) -> None:
        if not self.db.closed:
            self.assertEqual(self.db.verify(), "ok")
        self.db.close()
        if PG:
            pg_drop(self.path)
        shutil.rmtree(self.dir, ignore_errors=True)


def race(n: int, fn: Callable[[int], None]) -> List[BaseException]:
    """Runs fn(i) on n threads released together; returns what they raised
    (re-raised by the caller's assertions, so a failure shows)."""
    barrier = threading.Barrier(n)
    errors: List[BaseException] = []
    lock = threading.Lock()

    def body(i: int) -> None:
        try:
            barrier.wait()
            fn(i)
        except BaseException as e:  # reported to the test
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
