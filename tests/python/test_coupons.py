"""Coupon policies and issuance from Python, with each outcome's exception,
and the race of 32 Python threads for a 500-coupon cap."""

import sqlite3
import threading
import time
import unittest

import shopcore

from sctest import DbTestCase, race, sqlite_only


class PolicyTest(DbTestCase):
    def test_create_and_read(self):
        policy = self.db.create_policy("spring", max_count=10,
                                       per_user_limit=2, discount_percent=10,
                                       max_discount=500)
        got = self.db.policy(policy)
        self.assertEqual(got, shopcore.CouponPolicy(
            id=policy, max_count=10, issued_count=0, per_user_limit=2,
            paused=False))
        self.assertEqual(got.remaining, 10)
        with self.assertRaises(AttributeError):
            got.max_count = 11  # results are immutable

    def test_issue_returns_distinct_ids(self):
        policy = self.db.create_policy("p", max_count=3)
        coupons = {self.db.issue_coupon(policy, user) for user in (1, 2, 3)}
        self.assertEqual(len(coupons), 3)
        self.assertTrue(all(c > 0 for c in coupons))
        self.assertEqual(self.db.policy(policy).issued_count, 3)

    def test_sold_out(self):
        policy = self.db.create_policy("p", max_count=2)
        self.db.issue_coupon(policy, 1)
        self.db.issue_coupon(policy, 2)
        with self.assertRaises(shopcore.SoldOut):
            self.db.issue_coupon(policy, 3)
        self.assertEqual(self.db.policy(policy).issued_count, 2)

    def test_limit_reached(self):
        policy = self.db.create_policy("p", max_count=10, per_user_limit=2)
        self.db.issue_coupon(policy, 7)
        self.db.issue_coupon(policy, 7)
        with self.assertRaises(shopcore.LimitReached):
            self.db.issue_coupon(policy, 7)
        self.db.issue_coupon(policy, 8)
        self.assertEqual(self.db.policy(policy).issued_count, 3)

    def test_pause_and_resume(self):
        policy = self.db.create_policy("p", max_count=10)
        self.db.pause_policy(policy)
        self.db.pause_policy(policy)  # pausing a paused policy: no change
        self.assertTrue(self.db.policy(policy).paused)
        with self.assertRaises(shopcore.Paused):
            self.db.issue_coupon(policy, 1)
        self.db.resume_policy(policy)
        self.db.resume_policy(policy)  # resuming a running policy: no change
        self.assertFalse(self.db.policy(policy).paused)
        self.db.issue_coupon(policy, 1)
        self.db.pause_policy(policy, paused=True)
        self.db.pause_policy(policy, paused=False)
        self.db.issue_coupon(policy, 2)
        self.assertEqual(self.db.policy(policy).issued_count, 2)

    def test_unknown_policy(self):
        with self.assertRaises(shopcore.NotFound):
            self.db.issue_coupon(999, 1)
        with self.assertRaises(shopcore.NotFound):
            self.db.pause_policy(999)
        with self.assertRaises(shopcore.NotFound):
            self.db.resume_policy(999)
        with self.assertRaises(shopcore.NotFound):
            self.db.policy(999)

    def test_invalid_spec_refused_by_the_library(self):
        with self.assertRaises(shopcore.Invalid) as cm:
            self.db.create_policy("p", max_count=5, discount_amount=100,
                                  discount_percent=10)
        self.assertIn("exclusive", str(cm.exception))
        with self.assertRaises(shopcore.Invalid):
            self.db.create_policy("p", max_count=5, starts_at_ms=2000,
                                  ends_at_ms=1000)
        # shopcore.Invalid is a ValueError too.
        with self.assertRaises(ValueError):
            self.db.create_policy("p", max_count=5, starts_at_ms=5,
                                  ends_at_ms=5)


class WindowTest(DbTestCase):
    def setUp(self):
        self.clock = shopcore.ManualClock(1000)
        self.open_options = {"clock": self.clock}
        super().setUp()

    def test_not_active_outside_the_window(self):
        policy = self.db.create_policy("p", max_count=10, starts_at_ms=2000,
                                       ends_at_ms=3000)
        with self.assertRaises(shopcore.NotActive):
            self.db.issue_coupon(policy, 1)
        self.clock.now_ms = 2000
        self.db.issue_coupon(policy, 1)
        self.clock.now_ms = 2999
        self.db.issue_coupon(policy, 2)
        self.clock.now_ms = 3000
        with self.assertRaises(shopcore.NotActive):
            self.db.issue_coupon(policy, 3)
        self.assertEqual(self.db.policy(policy).issued_count, 2)


class RaceTest(DbTestCase):
    THREADS = 32
    CAP = 500

    def test_32_threads_race_for_500(self):
        policy = self.db.create_policy("flash", max_count=self.CAP)
        lock = threading.Lock()
        issued, sold_out, intervals = [], [], []

        def buyer(t):
            user = t * 100_000
            mine = []
            while True:
                user += 1
                start = time.perf_counter()
                try:
                    coupon = self.db.issue_coupon(policy, user)
                except shopcore.SoldOut:
                    end = time.perf_counter()
                    with lock:
                        sold_out.append(t)
                        intervals.extend(mine + [(start, end, t)])
                    return
                mine.append((start, time.perf_counter(), t))
                with lock:
                    issued.append(coupon)

        wall = time.perf_counter()
        self.assertEqual(race(self.THREADS, buyer), [])
        wall = time.perf_counter() - wall

        # Exactly the cap, each coupon once, and every thread saw SoldOut.
        self.assertEqual(len(issued), self.CAP)
        self.assertEqual(len(set(issued)), self.CAP)
        self.assertEqual(len(sold_out), self.THREADS)
        self.assertEqual(self.db.policy(policy).issued_count, self.CAP)
        self.assertEqual(self.db.verify(), "ok")

        # The GIL was released: calls were inside the library at the same
        # time. A call counts itself in and out with the GIL held, so with
        # the GIL kept across the C call no two could ever be in at once.
        self.assertGreaterEqual(self.db.peak_concurrent_calls, 2)
        # And seen from Python: intervals of different threads overlap.
        intervals.sort()
        overlaps = sum(
            1 for (s1, e1, t1), (s2, e2, t2) in zip(intervals, intervals[1:])
            if s2 < e1 and t1 != t2)
        self.assertGreater(overlaps, 0)
        busy = sum(e - s for s, e, _ in intervals)
        print("\n  {} calls on {} threads: wall {:.3f} s, sum of call times "
              "{:.3f} s ({:.1f}x), peak {} calls in the library at once, "
              "{} overlapping neighbours".format(
                  len(intervals), self.THREADS, wall, busy, busy / wall,
                  self.db.peak_concurrent_calls, overlaps))

    @sqlite_only
    def test_a_waiting_call_releases_the_gil(self):
        # Another connection holds the write lock, so an issue waits inside
        # the library. While it waits this thread runs Python, reads through
        # the library, and finally lets it through; had the waiting call
        # kept the GIL, none of that could run and it would end in Busy.
        policy = self.db.create_policy("p", max_count=5)
        blocker = sqlite3.connect(self.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        result = []
        waiter = threading.Thread(
            target=lambda: result.append(self.db.issue_coupon(policy, 1)))
        waiter.start()
        try:
            deadline = time.monotonic() + 20
            while self.db._calls_in_progress() == 0:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.001)
            # That call is in the library now, and this thread runs.
            time.sleep(0.05)
            self.assertTrue(waiter.is_alive())
            self.assertEqual(self.db.policy(policy).issued_count, 0)
            self.assertGreaterEqual(self.db.peak_concurrent_calls, 2)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        waiter.join(30)
        self.assertFalse(waiter.is_alive())
        self.assertEqual(len(result), 1)
        self.assertEqual(self.db.policy(policy).issued_count, 1)


if __name__ == "__main__":
    unittest.main()
