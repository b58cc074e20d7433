"""Administration from Python: counts, repair, backup, metrics."""

import os
import sqlite3
import unittest

import shopcore

from sctest import DbTestCase


class AdminTest(DbTestCase):
    def setUp(self):
        super().setUp()
        self.policy = self.db.create_policy("p", max_count=5)
        self.db.issue_coupon(self.policy, 1)
        self.product = self.db.create_product("tea", price=10, stock=4)
        self.db.deposit(1, 100)
        self.order = self.db.checkout(1, {self.product: 1})

    def test_stats(self):
        s = self.db.stats()
        self.assertIsInstance(s, shopcore.Stats)
        self.assertEqual((s.products, s.units_total, s.units_reserved),
                         (1, 4, 1))
        self.assertEqual((s.accounts, s.balance_total, s.held_total),
                         (1, 100, 10))
        self.assertEqual((s.orders_pending, s.policies, s.coupons), (1, 1, 1))
        self.assertEqual(s.events_pending, 3)  # issued, deposit, created

    def test_repair_fixes_counters(self):
        raw = sqlite3.connect(self.path, isolation_level=None)
        raw.execute("UPDATE sc_coupon_policy SET issued_count = 4")
        raw.close()
        with self.assertRaises(shopcore.Corrupt):
            self.db.verify()
        dry = self.db.repair(dry_run=True)
        self.assertGreaterEqual(dry.changes, 1)
        self.assertIn("issued_count", dry.report)
        self.assertEqual(self.db.policy(self.policy).issued_count, 4)
        done = self.db.repair()
        self.assertEqual(done.changes, dry.changes)
        self.assertEqual(self.db.policy(self.policy).issued_count, 1)
        self.assertEqual(self.db.repair(), (0, "nothing to repair"))
        with self.assertRaises(TypeError):
            self.db.repair(dry_run="yes")

    def test_backup(self):
        dest = os.path.join(self.dir, "copy.db")
        self.db.backup(dest)
        with self.assertRaises(shopcore.Exists):
            self.db.backup(dest)
        with shopcore.open(dest) as copy:
            self.assertEqual(copy.order(self.order).total, 10)
            self.assertEqual(copy.verify(), "ok")
        for bad in (None, 5):
            with self.assertRaises(TypeError):
                self.db.backup(bad)
        with self.assertRaises(ValueError):
            self.db.backup("")

    def test_metrics_count(self):
        policy = self.db.create_policy("m", max_count=1)
        self.db.issue_coupon(policy, 1)
        with self.assertRaises(shopcore.SoldOut):
            self.db.issue_coupon(policy, 2)
        with self.assertRaises(shopcore.SoldOut):
            self.db.issue_coupon(policy, 3)
        self.assertEqual(self.db.metrics_count(shopcore.SoldOut,
                                               "coupon_issue"), 2)
        # setUp issued one coupon too; every kind: two policies, two
        # coupons, a product, a deposit and a checkout.
        self.assertEqual(self.db.metrics_count(0, "coupon_issue"), 2)
        self.assertEqual(self.db.metrics_count(shopcore.SoldOut, "checkout"),
                         0)
        self.assertEqual(self.db.metrics_count(), 7)
        with self.assertRaises(shopcore.NotFound):
            self.db.metrics_count(0, "no_such_op")
        with self.assertRaises(shopcore.Invalid):
            self.db.metrics_count(9999)
        with self.assertRaises(TypeError):
            self.db.metrics_count("SC_OK")

    def test_metrics_prometheus(self):
        text = self.db.metrics_prometheus()
        self.assertIn('shopcore_operations_total{op="coupon_issue",'
                      'status="SC_OK",outcome="ok"} 1', text)
        self.assertIn('op="checkout"', text)


if __name__ == "__main__":
    unittest.main()
