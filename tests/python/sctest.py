"""Helpers shared by the Python test modules (not a test module itself)."""

import os
import shutil
import tempfile
import threading
import unittest
from typing import Callable, List

import shopcore


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
        self.path = os.path.join(self.dir, "shop.db")
        self.db = self.open_db()

    def open_db(self, **options) -> shopcore.Database:
        opts = dict(self.open_options)
        opts.update(options)
        return shopcore.open(self.path, **opts)

    def tearDown(self) -> None:
        if not self.db.closed:
            self.assertEqual(self.db.verify(), "ok")
        self.db.close()
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
