"""The background worker from Python: events reach a Python callable on the
worker's thread, failures are retried, expiry runs on time, and the worker
stops cleanly (by stop(), by its with block, or by closing the database)."""

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import shopcore
from shopcore import EventType, OrderStatus

from sctest import DbTestCase

WAIT_S = 20  # generous: the machine is shared


class Collector:
    """A handler recording every delivery; its first `fail_first` calls
    raise."""

    def __init__(self, fail_first=0):
        self.events = []
        self.threads = set()
        self.cond = threading.Condition()
        self.fail_first = fail_first

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.threads.add(threading.get_ident())
            self.cond.notify_all()
            fail = len(self.events) <= self.fail_first
        if fail:
            raise RuntimeError("consumer not ready for event %d" % event.id)

    def wait_for(self, predicate, what):
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.events), WAIT_S)
        if not ok:
            raise AssertionError("timed out waiting for " + what)

    def ids(self):
        with self.cond:
            return [ev.id for ev in self.events]


class WorkerTest(DbTestCase):
    open_options = {"outbox_retry_base_ms": 10, "outbox_retry_max_ms": 50}

    def test_delivers_every_event_to_python(self):
        handler = Collector()
        worker = self.db.start_worker(handler)
        self.assertTrue(worker.running)
        policy = self.db.create_policy("p", max_count=10)
        coupons = [self.db.issue_coupon(policy, u) for u in (1, 2, 3)]
        for amount in (100, 200, 300):
            self.db.deposit(9, amount)
        handler.wait_for(lambda evs: len(evs) >= 6, "6 events")
        worker.stop()
        self.assertFalse(worker.running)
        issued = [ev for ev in handler.events
                  if ev.type == EventType.COUPON_ISSUED]
        self.assertEqual(sorted(ev.aggregate_id for ev in issued), coupons)
        deposits = [ev for ev in handler.events
                    if ev.type == EventType.DEPOSIT]
        # In order within the aggregate (the account of user 9).
        self.assertEqual([(ev.seq, ev.data["amount"]) for ev in deposits],
                         [(1, 100), (2, 200), (3, 300)])
        self.assertNotIn(threading.get_ident(), handler.threads)
        self.assertEqual(worker.delivered, 6)
        self.assertEqual(worker.failed, 0)
        # Everything was acknowledged: nothing is left to claim.
        self.assertEqual(self.db.claim_events(), [])

    def test_no_call_after_stop(self):
        handler = Collector()
        with self.db.start_worker(handler) as worker:
            self.db.deposit(1, 100)
            handler.wait_for(lambda evs: len(evs) == 1, "the deposit")
        self.assertFalse(worker.running)
        worker.stop()  # a second stop does nothing
        self.db.deposit(1, 200)
        time.sleep(0.2)
        self.assertEqual(len(handler.events), 1)
        # The event written after the stop waits in the outbox.
        pending, = self.db.claim_events()
        self.assertEqual(pending.data["amount"], 200)
        self.db.ack(pending)

    def test_failing_handler_is_retried(self):
        handler = Collector(fail_first=2)
        with self.assertLogs("shopcore", level="ERROR") as logs:
            with self.db.start_worker(handler) as worker:
                self.db.deposit(1, 100)
                handler.wait_for(lambda evs: len(evs) >= 3, "3 deliveries")
        ids = handler.ids()
        self.assertEqual(len(ids), 3)
        self.assertEqual(len(set(ids)), 1)  # the same event, redelivered
        self.assertEqual([ev.attempts for ev in handler.events], [0, 1, 2])
        self.assertEqual((worker.delivered, worker.failed), (1, 2))
        self.assertIn("consumer not ready", "\n".join(logs.output))
        self.assertEqual(self.db.claim_events(), [])

    def test_returning_false_retries(self):
        seen = []
        done = threading.Event()

        def handler(event):
            seen.append(event.attempts)
            if len(seen) == 1:
                return False
            done.set()
            return True

        with self.db.start_worker(handler) as worker:
            self.db.deposit(1, 100)
            self.assertTrue(done.wait(WAIT_S))
        self.assertEqual(seen, [0, 1])
        self.assertEqual((worker.delivered, worker.failed), (1, 1))

    def test_handler_may_use_the_database(self):
        results = []
        done = threading.Event()

        def handler(event):
            if event.type == EventType.ORDER_CREATED:
                results.append(self.db.order(event.data["order"]).status)
                done.set()

        self.db.deposit(1, 1000)
        product = self.db.create_product("tea", price=10, stock=5)
        with self.db.start_worker(handler):
            self.db.checkout(1, {product: 1})
            self.assertTrue(done.wait(WAIT_S))
        self.assertEqual(results, [OrderStatus.PENDING])

    def test_handler_cannot_stop_its_worker_or_close(self):
        errors = []
        done = threading.Event()
        holder = {}

        def handler(event):
            for call in (holder["worker"].stop, self.db.close):
                try:
                    call()
                except RuntimeError as e:
                    errors.append(str(e))
            done.set()

        holder["worker"] = self.db.start_worker(handler)
        self.db.deposit(1, 100)
        self.assertTrue(done.wait(WAIT_S))
        holder["worker"].stop()
        self.assertEqual(len(errors), 2)
        self.assertIn("own event handler", errors[0])
        self.assertFalse(self.db.closed)

    def test_expires_orders_on_time(self):
        self.db.deposit(1, 1000)
        product = self.db.create_product("tea", price=10, stock=5)
        expired = threading.Event()

        def handler(event):
            if event.type == EventType.ORDER_EXPIRED:
                expired.set()

        with self.db.start_worker(handler):
            order = self.db.checkout(1, {product: 2}, ttl_ms=100)
            self.assertTrue(expired.wait(WAIT_S))
        got = self.db.order(order)
        self.assertEqual(got.status, OrderStatus.EXPIRED)
        self.assertEqual(self.db.stock(product).reserved, 0)

    def test_close_stops_the_worker(self):
        handler = Collector()
        worker = self.db.start_worker(handler)
        self.db.deposit(1, 100)
        handler.wait_for(lambda evs: len(evs) == 1, "the deposit")
        self.db.close()
        self.assertFalse(worker.running)
        worker.stop()  # after close: nothing to do
        self.assertIn("stopped", repr(worker))
        reopened = shopcore.open(self.path)
        self.assertEqual(reopened.verify(), "ok")
        reopened.close()

    def test_dropped_worker_runs_until_close(self):
        handler = Collector()
        self.db.start_worker(handler)  # no reference kept
        gc.collect()
        self.db.deposit(1, 100)
        handler.wait_for(lambda evs: len(evs) == 1, "the deposit")
        self.db.close()  # stops it; must not hang

    def test_exit_without_stop_is_clean(self):
        # A program that leaves a worker running (its handler even busy) and
        # never closes the database still exits: the package closes open
        # databases at exit, which stops and joins their workers.
        script = textwrap.dedent("""
            import sys, threading, time, shopcore
            db = shopcore.open(sys.argv[1])
            busy = threading.Event()
            def handler(event):
                busy.set()
                time.sleep(0.2)
            db.start_worker(handler)
            db.deposit(1, 100)
            busy.wait(20)
            print("leaving")
        """)
        self.db.close()
        out = subprocess.run([sys.executable, "-c", script, self.path],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "leaving")
        self.assertEqual(out.stderr, "")
        with shopcore.open(self.path) as db:
            self.assertEqual(db.verify(), "ok")

    def test_start_stop_cycles(self):
        handler = Collector()
        for i in range(5):
            with self.db.start_worker(handler):
                self.db.deposit(1, 100 + i)
                handler.wait_for(lambda evs, n=i + 1: len(evs) == n,
                                 "deposit %d" % i)
        self.assertEqual([ev.data["amount"] for ev in handler.events],
                         [100, 101, 102, 103, 104])

    def test_one_worker_per_database(self):
        handler = Collector()
        with self.db.start_worker(handler):
            with self.assertRaises(shopcore.Misuse):
                self.db.start_worker(handler)
        with self.db.start_worker(handler):  # the first one stopped
            self.db.deposit(1, 100)
            handler.wait_for(lambda evs: len(evs) == 1, "the deposit")

    def test_expiry_only_worker(self):
        self.db.deposit(1, 1000)
        product = self.db.create_product("tea", price=10, stock=5)
        with self.db.start_worker(None, poll_interval_ms=50) as worker:
            order = self.db.checkout(1, {product: 1}, ttl_ms=50)
            deadline = time.monotonic() + WAIT_S
            while self.db.order(order).status == OrderStatus.PENDING:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
        self.assertEqual(self.db.order(order).status, OrderStatus.EXPIRED)
        self.assertEqual(worker.delivered, 0)
        # Events were left for someone else to consume.
        self.assertEqual(len(self.db.claim_events()), 2)  # deposit, created

    def test_worker_options(self):
        handler = Collector()
        with self.db.start_worker(handler, batch_max=1, lease_ms=5000,
                                  poll_interval_ms=20, expire_orders=False):
            for user in (1, 2, 3):
                self.db.deposit(user, 10)
            handler.wait_for(lambda evs: len(evs) == 3, "3 deposits")
        with self.assertRaises(ValueError):
            self.db.start_worker(handler, batch_max=-1)
        with self.assertRaises(ValueError):
            self.db.start_worker(handler, batch_max=10**6)
        with self.assertRaises(TypeError):
            self.db.start_worker(handler, expire_orders=None)

if __name__ == "__main__":
    unittest.main()
