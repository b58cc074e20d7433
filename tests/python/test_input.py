"""Bad input from Python: None, wrong types, negative numbers, ints past
int64, NUL in strings, malformed lines. Each raises TypeError or ValueError
before reaching the library, and changes nothing."""

import sqlite3
import unittest

import shopcore

from sctest import DbTestCase

INT64_MAX = 2**63 - 1


class Id:
    """An object with __index__, accepted wherever an int is."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


class BadInputTest(DbTestCase):
    def setUp(self):
        super().setUp()
        self.product = self.db.create_product("tea", price=100, stock=5)
        self.policy = self.db.create_policy("p", max_count=5)
        self.db.deposit(1, 1000)

    def assert_nothing_changed(self):
        self.assertEqual(self.db.stock(self.product), (5, 0, 5, 0))
        self.assertEqual(self.db.policy(self.policy).issued_count, 0)
        self.assertEqual(self.db.account(1), (1000, 0, 1000))
        self.assertEqual(self.db.verify(), "ok")

    def check_ids(self, call):
        """call(x) with x in an id position: wrong types and ranges."""
        for bad in (None, "1", 1.0, True, b"1", [1]):
            with self.assertRaises(TypeError, msg=repr(bad)):
                call(bad)
        for bad in (0, -1, -2**63, 2**63, 2**64, 10**30):
            with self.assertRaises(ValueError, msg=repr(bad)) as cm:
                call(bad)
            self.assertNotIsInstance(cm.exception, shopcore.Error)

    def test_ids(self):
        self.check_ids(lambda x: self.db.stock(x))
        self.check_ids(lambda x: self.db.restock(x, 1))
        self.check_ids(lambda x: self.db.account(x))
        self.check_ids(lambda x: self.db.deposit(x, 5))
        self.check_ids(lambda x: self.db.policy(x))
        self.check_ids(lambda x: self.db.pause_policy(x))
        self.check_ids(lambda x: self.db.issue_coupon(x, 1))
        self.check_ids(lambda x: self.db.issue_coupon(self.policy, x))
        self.check_ids(lambda x: self.db.checkout(x, {self.product: 1}))
        self.check_ids(lambda x: self.db.checkout(1, {x: 1}))
        for bad in ("1", 1.0, True, 0, -1, 2**63):  # None: no coupon
            with self.assertRaises((TypeError, ValueError), msg=repr(bad)):
                self.db.checkout(1, {self.product: 1}, coupon=bad)
        self.check_ids(lambda x: self.db.pay(x))
        self.check_ids(lambda x: self.db.cancel(x))
        self.check_ids(lambda x: self.db.order(x))
        self.check_ids(lambda x: self.db.ack(x))
        self.check_ids(lambda x: self.db.nack(x))
        self.assert_nothing_changed()

    def test_amounts_and_quantities(self):
        db = self.db
        for bad in (-1, 2**63):
            with self.assertRaises(ValueError):
                db.create_product("x", price=bad, stock=1)
            with self.assertRaises(ValueError):
                db.create_product("x", price=1, stock=bad)
            with self.assertRaises(ValueError):
                db.checkout(1, {self.product: 1}, ttl_ms=bad)
        for bad in (0, -5, 2**63):
            with self.assertRaises(ValueError):
                db.restock(self.product, bad)
            with self.assertRaises(ValueError):
                db.deposit(1, bad)
            with self.assertRaises(ValueError):
                db.checkout(1, {self.product: bad})
            with self.assertRaises(ValueError):
                db.create_policy("p", max_count=bad)
        for bad in (None, "5", 5.0):
            with self.assertRaises(TypeError):
                db.deposit(1, bad)
            with self.assertRaises(TypeError):
                db.create_product("x", price=bad)
            with self.assertRaises(TypeError):
                db.checkout(1, {self.product: bad})
        self.assert_nothing_changed()

    def test_policy_fields(self):
        db = self.db
        with self.assertRaises(ValueError):
            db.create_policy("p", max_count=5, per_user_limit=0)
        with self.assertRaises(ValueError):
            db.create_policy("p", max_count=5, per_user_limit=2**31)
        with self.assertRaises(ValueError):
            db.create_policy("p", max_count=5, discount_percent=101)
        with self.assertRaises(ValueError):
            db.create_policy("p", max_count=5, discount_percent=-1)
        with self.assertRaises(ValueError):
            db.create_policy("p", max_count=5, starts_at_ms=-1)
        with self.assertRaises(TypeError):
            db.create_policy("p", 5, 1)  # the options are keyword-only
        with self.assertRaises(TypeError):
            db.pause_policy(self.policy, paused=1)
        self.assert_nothing_changed()

    def test_strings(self):
        db = self.db
        for bad in (None, 7, b"tea"):
            with self.assertRaises(TypeError):
                db.create_product(bad, price=1)
            with self.assertRaises(TypeError):
                db.create_policy(bad, max_count=1)
        for bad in ("", "te\0a"):
            with self.assertRaises(ValueError):
                db.create_product(bad, price=1)
            with self.assertRaises(ValueError):
                db.create_policy(bad, max_count=1)
            with self.assertRaises(ValueError):
                db.deposit(1, 5, idempotency_key=bad)
            with self.assertRaises(ValueError):
                db.checkout(1, {self.product: 1}, idempotency_key=bad)
        with self.assertRaises(TypeError):
            db.deposit(1, 5, idempotency_key=5)
        with self.assertRaises(ValueError):  # not encodable as UTF-8
            db.create_product("\udc80", price=1)
        self.assert_nothing_changed()

    def test_lines(self):
        db = self.db
        for bad in (None, 5, "ab", b"ab", [1, 2], [(1,)], [(1, 2, 3)],
                    [[self.product, 1]]):
            with self.assertRaises(TypeError, msg=repr(bad)):
                db.checkout(1, bad)
        for bad in ({}, [], [(self.product, 1), (self.product, 2)]):
            with self.assertRaises(ValueError, msg=repr(bad)):
                db.checkout(1, bad)
        with self.assertRaises(TypeError):
            db.checkout(1, {self.product: 1}, expected_versions=[0])
        with self.assertRaises(ValueError):
            db.checkout(1, {self.product: 1}, expected_versions={})
        with self.assertRaises(ValueError):
            db.checkout(1, {self.product: 1},
                        expected_versions={self.product: 0, 99: 0})
        with self.assertRaises(ValueError):
            db.checkout(1, {self.product: 1},
                        expected_versions={self.product: -1})
        self.assert_nothing_changed()

    def rows(self):
        """Row counts of the tables a refused call must leave alone."""
        con = sqlite3.connect(self.path)
        try:
            return {t: con.execute("SELECT count(*) FROM " + t).fetchone()[0]
                    for t in ("sc_product", "sc_coupon_policy", "sc_ledger",
                              "sc_idempotency", "sc_order", "sc_outbox")}
        finally:
            con.close()

    def test_limits(self):
        """Names and keys past 255 UTF-8 bytes and checkouts past 1,000
        lines raise Invalid (SC_INVALID) and store nothing; at the limits
        they pass."""
        db = self.db
        self.assertEqual((shopcore.NAME_MAX, shopcore.KEY_MAX,
                          shopcore.CHECKOUT_LINES_MAX), (255, 255, 1000))
        before = self.rows()
        # 256 bytes, 256 bytes in 128 characters, and 10 MiB.
        for bad in ("x" * 256, "\u00e9" * 128, "k" * (10 << 20)):
            with self.assertRaises(shopcore.Invalid) as cm:
                db.create_product(bad, price=1)
            self.assertIn("longer than 255 bytes", str(cm.exception))
            with self.assertRaises(shopcore.Invalid):
                db.create_policy(bad, max_count=1)
            with self.assertRaises(shopcore.Invalid):
                db.deposit(1, 5, idempotency_key=bad)
            with self.assertRaises(shopcore.Invalid):
                db.checkout(1, {self.product: 1}, idempotency_key=bad)
        many = [(p, 1) for p in range(self.product,
                                      self.product + 1001)]
        with self.assertRaises(shopcore.Invalid) as cm:
            db.checkout(1, many)
        self.assertIn("more than 1000", str(cm.exception))
        self.assertEqual(self.rows(), before)
        self.assert_nothing_changed()
        # At the limits: 1,000 lines pass the count (and meet unknown
        # products); 255 bytes are stored whole.
        with self.assertRaises(shopcore.NotFound):
            db.checkout(1, many[:1000])
        name = "\u00e9" * 127 + "x"
        product = db.create_product(name, price=1, stock=1)
        db.create_policy(name, max_count=1)
        db.deposit(1, 5, idempotency_key="k" * 255)
        db.checkout(1, {product: 1}, idempotency_key="o" * 255)
        con = sqlite3.connect(self.path)
        try:
            self.assertEqual(con.execute(
                "SELECT name FROM sc_product WHERE id = ?",
                (product,)).fetchone()[0], name)
        finally:
            con.close()

    def test_events_and_worker_arguments(self):
        with self.assertRaises(ValueError):
            self.db.claim_events(max=0)
        with self.assertRaises(ValueError):
            self.db.claim_events(lease_ms=0)
        with self.assertRaises(TypeError):
            self.db.claim_events(max=None)
        with self.assertRaises(TypeError):
            self.db.nack(1, reason=3)
        with self.assertRaises(TypeError):
            self.db.start_worker(5)
        with self.assertRaises(TypeError):
            self.db.start_worker("not callable")
        self.assert_nothing_changed()

    def test_index_objects_are_accepted(self):
        self.assertEqual(self.db.stock(Id(self.product)).total, 5)
        self.db.issue_coupon(Id(self.policy), Id(3))
        self.assertEqual(self.db.policy(self.policy).issued_count, 1)
        with self.assertRaises(ValueError):
            self.db.stock(Id(2**63))


if __name__ == "__main__":
    unittest.main()
