"""Products, stock, accounts, checkout, pay, cancel and expiry from Python,
each refusal as its own exception class."""

import unittest

import shopcore
from shopcore import OrderStatus, Stock

from sctest import DbTestCase, race, sqlite_only

START_MS = 1_000_000


class CatalogTest(DbTestCase):
    def test_product_stock_and_restock(self):
        product = self.db.create_product("tea", price=250, stock=10)
        self.assertGreater(product, 0)
        self.assertEqual(self.db.stock(product), Stock(10, 0, 10, 0))
        stock = self.db.stock(product)
        self.assertEqual((stock.total, stock.reserved, stock.available),
                         (10, 0, 10))
        self.db.restock(product, qty=5)
        after = self.db.stock(product)
        self.assertEqual((after.total, after.available), (15, 15))
        self.assertEqual(after.version, stock.version + 1)
        free = self.db.create_product("sample", price=0)
        self.assertEqual(self.db.stock(free).total, 0)

    def test_product_name_price_and_stock(self):
        product = self.db.create_product("caf\u00e9 cup", price=250, stock=10)
        got = self.db.product(product)
        self.assertIsInstance(got, shopcore.Product)
        self.assertEqual(got, shopcore.Product("caf\u00e9 cup", 250,
                                               Stock(10, 0, 10, 0)))
        self.db.deposit(1, 1000)
        self.db.checkout(1, [(product, 3)])
        got = self.db.product(product)
        self.assertEqual((got.stock.reserved, got.stock.available), (3, 7))
        self.assertEqual(got.stock, self.db.stock(product))
        longest = "n" * shopcore.NAME_MAX
        self.assertEqual(
            self.db.product(self.db.create_product(longest, price=1)).name,
            longest)

    def test_unknown_product(self):
        with self.assertRaises(shopcore.NotFound):
            self.db.product(404)
        with self.assertRaises(shopcore.NotFound):
            self.db.stock(404)
        with self.assertRaises(shopcore.NotFound):
            self.db.restock(404, 1)

    def test_restock_overflow_is_invalid(self):
        product = self.db.create_product("tea", price=1, stock=2**63 - 2)
        with self.assertRaises(shopcore.Invalid):
            self.db.restock(product, 2)
        self.assertEqual(self.db.stock(product).total, 2**63 - 2)


class AccountTest(DbTestCase):
    def test_deposit_and_read(self):
        self.db.deposit(7, 1000)
        self.db.deposit(user=7, amount=500)
        self.assertEqual(self.db.account(7),
                         shopcore.Account(balance=1500, held=0,
                                          available=1500))

    def test_idempotent_deposit(self):
        self.db.deposit(7, 1000, idempotency_key="pay-in-1")
        self.db.deposit(7, 1000, idempotency_key="pay-in-1")
        self.assertEqual(self.db.account(7).balance, 1000)
        with self.assertRaises(shopcore.IdempotencyMismatch):
            self.db.deposit(7, 999, idempotency_key="pay-in-1")
        with self.assertRaises(shopcore.IdempotencyMismatch):
            self.db.deposit(8, 1000, idempotency_key="pay-in-1")
        self.assertEqual(self.db.account(7).balance, 1000)

    def test_unknown_account(self):
        with self.assertRaises(shopcore.NotFound):
            self.db.account(12)


class OrderTest(DbTestCase):
    def setUp(self):
        self.clock = shopcore.ManualClock(START_MS)
        self.open_options = {"clock": self.clock}
        super().setUp()
        self.tea = self.db.create_product("tea", price=300, stock=10)
        self.cup = self.db.create_product("cup", price=1000, stock=2)
        self.db.deposit(1, 10_000)

    def test_checkout_then_pay(self):
        order = self.db.checkout(1, {self.tea: 2, self.cup: 1}, ttl_ms=60_000)
        got = self.db.order(order)
        self.assertEqual(got, shopcore.Order(
            id=order, user=1, status=OrderStatus.PENDING, total=1600,
            discount=0, expires_at_ms=START_MS + 60_000))
        self.assertEqual(self.db.stock(self.tea)[:3], (10, 2, 8))
        self.assertEqual(self.db.account(1), (10_000, 1600, 8400))
        self.db.pay(order)
        self.db.pay(order)  # paying twice changes nothing
        self.assertEqual(self.db.order(order).status, OrderStatus.CONFIRMED)
        self.assertEqual(self.db.stock(self.tea)[:3], (8, 0, 8))
        self.assertEqual(self.db.account(1), (8400, 0, 8400))
        with self.assertRaises(shopcore.InvalidState):
            self.db.cancel(order)

    def test_lines_as_pairs(self):
        order = self.db.checkout(1, [(self.tea, 1), (self.cup, 2)])
        self.assertEqual(self.db.order(order).total, 2300)

    def test_cancel_releases(self):
        order = self.db.checkout(1, {self.cup: 2})
        self.db.cancel(order)
        self.db.cancel(order)  # cancelling twice changes nothing
        self.assertEqual(self.db.order(order).status, OrderStatus.CANCELLED)
        self.assertEqual(self.db.stock(self.cup)[:3], (2, 0, 2))
        self.assertEqual(self.db.account(1).held, 0)
        with self.assertRaises(shopcore.InvalidState):
            self.db.pay(order)

    def test_out_of_stock(self):
        with self.assertRaises(shopcore.OutOfStock):
            self.db.checkout(1, {self.tea: 1, self.cup: 3})
        # All or nothing: the tea line reserved nothing.
        self.assertEqual(self.db.stock(self.tea).reserved, 0)

    def test_insufficient_balance(self):
        self.db.deposit(2, 100)
        with self.assertRaises(shopcore.InsufficientBalance):
            self.db.checkout(2, {self.cup: 1})
        self.assertEqual(self.db.account(2).held, 0)

    def test_coupon_discount_and_unavailable(self):
        policy = self.db.create_policy("10%", max_count=10,
                                       discount_percent=10, max_discount=150)
        mine = self.db.issue_coupon(policy, 1)
        self.db.deposit(2, 10_000)
        theirs = self.db.issue_coupon(policy, 2)
        with self.assertRaises(shopcore.CouponUnavailable):
            self.db.checkout(1, {self.tea: 1}, coupon=theirs)
        order = self.db.checkout(1, {self.cup: 2}, coupon=mine)
        got = self.db.order(order)
        self.assertEqual((got.total, got.discount), (2000 - 150, 150))
        # Held by the pending order, the coupon cannot be used again.
        with self.assertRaises(shopcore.CouponUnavailable):
            self.db.checkout(1, {self.tea: 1}, coupon=mine)
        with self.assertRaises(shopcore.NotFound):
            self.db.checkout(1, {self.tea: 1}, coupon=999)

    def test_expiry(self):
        order = self.db.checkout(1, {self.tea: 3}, ttl_ms=1000)
        self.clock.advance(999)
        self.assertEqual(self.db.expire_due(), 0)
        self.clock.advance(1)
        with self.assertRaises(shopcore.Expired):
            self.db.pay(order)
        self.assertEqual(self.db.expire_due(), 1)
        self.assertEqual(self.db.expire_due(), 0)
        self.assertEqual(self.db.order(order).status, OrderStatus.EXPIRED)
        self.assertEqual(self.db.stock(self.tea).reserved, 0)
        self.assertEqual(self.db.account(1).held, 0)
        with self.assertRaises(shopcore.Expired):
            self.db.pay(order)
        with self.assertRaises(shopcore.InvalidState):
            self.db.cancel(order)

    def test_expected_versions(self):
        version = self.db.stock(self.tea).version
        order = self.db.checkout(1, {self.tea: 1},
                                 expected_versions={self.tea: version})
        self.assertEqual(self.db.stock(self.tea).version, version + 1)
        with self.assertRaises(shopcore.Conflict):
            self.db.checkout(1, {self.tea: 1},
                             expected_versions={self.tea: version})
        self.db.cancel(order)
        self.assertEqual(self.db.stock(self.tea).reserved, 0)

    def test_idempotent_checkout(self):
        first = self.db.checkout(1, {self.tea: 1}, idempotency_key="cart-9")
        again = self.db.checkout(1, {self.tea: 1}, idempotency_key="cart-9")
        self.assertEqual(first, again)
        self.assertEqual(self.db.stock(self.tea).reserved, 1)
        with self.assertRaises(shopcore.IdempotencyMismatch):
            self.db.checkout(1, {self.tea: 2}, idempotency_key="cart-9")

    def test_idempotent_replays_race(self):
        orders = []
        errors = race(16, lambda i: orders.append(self.db.checkout(
            1, {self.cup: 1}, idempotency_key="double-click")))
        self.assertEqual(errors, [])
        self.assertEqual(len(set(orders)), 1)
        self.assertEqual(self.db.stock(self.cup).reserved, 1)

    def test_unknowns(self):
        with self.assertRaises(shopcore.NotFound):
            self.db.checkout(1, {404: 1})
        with self.assertRaises(shopcore.NotFound):
            self.db.checkout(77, {self.tea: 1})  # no account
        for call in (self.db.pay, self.db.cancel, self.db.order):
            with self.assertRaises(shopcore.NotFound):
                call(404)

    def test_overflowing_total_is_invalid(self):
        huge = self.db.create_product("huge", price=2**62, stock=10)
        with self.assertRaises(shopcore.Invalid):
            self.db.checkout(1, {huge: 4})
        self.assertEqual(self.db.stock(huge).reserved, 0)

    def test_hot_product_race(self):
        # 40 threads race for 10 units: exactly 10 orders.
        self.db.deposit(2, 10**9)
        hot = self.db.create_product("hot", price=1, stock=10)
        won, lost = [], []

        def buyer(i):
            try:
                won.append(self.db.checkout(2, {hot: 1}))
            except shopcore.OutOfStock:
                lost.append(i)

        self.assertEqual(race(40, buyer), [])
        self.assertEqual((len(won), len(lost)), (10, 30))
        for order in won:
            self.db.pay(order)
        self.assertEqual(self.db.stock(hot)[:3], (0, 0, 0))


class VerifyTest(DbTestCase):
    @sqlite_only
    def test_verify_ok_and_corrupt(self):
        policy = self.db.create_policy("p", max_count=5)
        self.db.issue_coupon(policy, 1)
        self.assertEqual(self.db.verify(), "ok")
        # Break invariant 1 behind the library's back.
        import sqlite3
        raw = sqlite3.connect(self.path, isolation_level=None)
        raw.execute("UPDATE sc_coupon_policy SET issued_count = 3")
        raw.close()
        with self.assertRaises(shopcore.Corrupt) as cm:
            self.db.verify()
        self.assertIn("issued_count 3", str(cm.exception))
        # Put it back so the closing verify holds.
        raw = sqlite3.connect(self.path, isolation_level=None)
        raw.execute("UPDATE sc_coupon_policy SET issued_count = 1")
        raw.close()


if __name__ == "__main__":
    unittest.main()
