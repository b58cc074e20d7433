"""Opening and closing: the context manager, close twice, use after close,
closing while other threads call, options."""

import gc
import os
import pathlib
import shutil
import tempfile
import threading
import unittest

import shopcore

from sctest import DbTestCase, race


class OpenCloseTest(unittest.TestCase):
    def setUp(self):
        base = os.environ.get("SC_TEST_TMPDIR") or None
        if base:
            os.makedirs(base, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="pytest-", dir=base)
        self.path = os.path.join(self.dir, "shop.db")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_context_manager_closes(self):
        with shopcore.open(self.path) as db:
            self.assertFalse(db.closed)
            policy = db.create_policy("p", max_count=5)
        self.assertTrue(db.closed)
        self.assertIn("closed", repr(db))
        # The data is on disk: a new handle sees it.
        with shopcore.open(pathlib.Path(self.path)) as db2:
            self.assertEqual(db2.policy(policy).max_count, 5)

    def test_context_manager_closes_on_exception(self):
        with self.assertRaises(RuntimeError):
            with shopcore.open(self.path) as db:
                raise RuntimeError("boom")
        self.assertTrue(db.closed)

    def test_close_twice_is_harmless(self):
        db = shopcore.open(self.path)
        db.close()
        db.close()
        self.assertTrue(db.closed)

    def test_every_call_after_close_raises_closed(self):
        db = shopcore.open(self.path)
        policy = db.create_policy("p", max_count=5)
        product = db.create_product("tea", price=100, stock=1)
        db.deposit(1, 1000)
        db.close()
        calls = [
            lambda: db.create_product("x", price=1, stock=1),
            lambda: db.restock(product, 1),
            lambda: db.stock(product),
            lambda: db.product(product),
            lambda: db.deposit(1, 5),
            lambda: db.account(1),
            lambda: db.create_policy("q", max_count=1),
            lambda: db.pause_policy(policy),
            lambda: db.resume_policy(policy),
            lambda: db.policy(policy),
            lambda: db.issue_coupon(policy, 1),
            lambda: db.checkout(1, {product: 1}),
            lambda: db.pay(1),
            lambda: db.cancel(1),
            lambda: db.order(1),
            lambda: db.expire_due(),
            lambda: db.verify(),
            lambda: db.claim_events(),
            lambda: db.ack(1),
            lambda: db.nack(1, "x"),
            lambda: db.start_worker(lambda ev: None),
        ]
        for call in calls:
            with self.assertRaises(shopcore.Closed) as cm:
                call()
            self.assertEqual(cm.exception.code, shopcore.Closed.code)
            self.assertIn("closed", str(cm.exception))

    def test_close_while_threads_call(self):
        # Threads keep calling while the main thread closes: every call
        # either completes or raises Closed; nothing crashes or hangs.
        db = shopcore.open(self.path)
        policy = db.create_policy("p", max_count=10**9)
        outcomes = {"ok": 0, "closed": 0}
        lock = threading.Lock()
        started = threading.Barrier(9)

        def caller(i):
            started.wait()
            user = i * 10**6
            while True:
                user += 1
                try:
                    db.issue_coupon(policy, user)
                    kind = "ok"
                except shopcore.Closed:
                    kind = "closed"
                with lock:
                    outcomes[kind] += 1
                if kind == "closed":
                    return

        threads = [threading.Thread(target=caller, args=(i,))
                   for i in range(8)]
        for t in threads:
            t.start()
        started.wait()
        while True:
            with lock:
                if outcomes["ok"] >= 50:
                    break
        db.close()
        for t in threads:
            t.join()
        self.assertEqual(outcomes["closed"], 8)
        with shopcore.open(self.path) as db2:
            self.assertEqual(db2.policy(policy).issued_count, outcomes["ok"])
            self.assertEqual(db2.verify(), "ok")

    def test_garbage_collected_handle_closes(self):
        db = shopcore.open(self.path)
        policy = db.create_policy("p", max_count=3)
        del db
        gc.collect()
        with shopcore.open(self.path) as db2:
            self.assertEqual(db2.policy(policy).max_count, 3)

    def test_options(self):
        clock = shopcore.ManualClock(1_000_000)
        with shopcore.open(self.path, durability="normal", batch_max=1,
                           busy_timeout_ms=1000, queue_max=64,
                           read_pool_max=2, default_order_ttl_ms=5000,
                           outbox_max_attempts=3, outbox_retry_base_ms=10,
                           outbox_retry_max_ms=100, clock=clock) as db:
            self.assertEqual(db.path, self.path)
            product = db.create_product("tea", price=10, stock=5)
            db.deposit(7, 100)
            order = db.checkout(7, {product: 1})
            # default_order_ttl_ms and the manual clock were taken.
            self.assertEqual(db.order(order).expires_at_ms, 1_005_000)
        with shopcore.open(self.path,
                           durability=shopcore.Durability.FULL) as db:
            self.assertEqual(db.verify(), "ok")

    def test_bad_options(self):
        with self.assertRaises(ValueError):
            shopcore.open(self.path, durability="sometimes")
        with self.assertRaises(TypeError):
            shopcore.open(self.path, durability=None)
        with self.assertRaises(ValueError):
            shopcore.open(self.path, batch_max=-1)
        with self.assertRaises(ValueError):
            shopcore.open(self.path, queue_max=2**31)
        with self.assertRaises(TypeError):
            shopcore.open(self.path, batch_max="8")
        with self.assertRaises(TypeError):
            shopcore.open(self.path, no_such_option=1)
        with self.assertRaises(TypeError):
            shopcore.open(self.path, clock=123)
        with self.assertRaises(TypeError):
            shopcore.open(None)
        with self.assertRaises(TypeError):
            shopcore.open(42)
        with self.assertRaises(ValueError):
            shopcore.open("")
        with self.assertRaises(ValueError):
            shopcore.open("a\0b")
        with self.assertRaises(shopcore.Invalid):
            shopcore.open(":memory:")
        self.assertFalse(os.path.exists(self.path))

    def test_unopenable_file(self):
        with self.assertRaises(shopcore.IOFailure):
            shopcore.open(os.path.join(self.dir, "no", "such", "dir.db"))
        not_a_db = os.path.join(self.dir, "text.db")
        with open(not_a_db, "w") as f:
            f.write("this is not a database, not even close " * 100)
        with self.assertRaises(shopcore.Corrupt):
            shopcore.open(not_a_db)

    def test_version(self):
        self.assertRegex(shopcore.__version__, r"^\d+\.\d+\.\d+$")


class ManualClockTest(unittest.TestCase):
    def test_set_and_advance(self):
        clock = shopcore.ManualClock(10)
        self.assertEqual(clock.now_ms, 10)
        self.assertEqual(clock.advance(5), 15)
        clock.now_ms = 100
        self.assertEqual(clock.now_ms, 100)
        self.assertEqual(repr(clock), "ManualClock(100)")
        with self.assertRaises(ValueError):
            clock.advance(-1)
        with self.assertRaises(TypeError):
            clock.now_ms = 1.5


class ThreadsTest(DbTestCase):
    def test_peak_concurrent_calls_counts_overlap(self):
        self.assertEqual(self.db.peak_concurrent_calls, 0)
        self.db.create_policy("p", max_count=1)
        self.assertEqual(self.db.peak_concurrent_calls, 1)
        self.assertEqual(self.db._calls_in_progress(), 0)
        self.assertEqual(race(1, lambda i: None), [])


if __name__ == "__main__":
    unittest.main()
