"""The exception classes: one per C status code, generated from the C list."""

import ast
import os
import pickle
import unittest

import shopcore
from shopcore import _shopcore as _c

from sctest import DbTestCase


class ErrorClassesTest(unittest.TestCase):
    def test_every_status_has_its_class(self):
        self.assertGreater(_c.SC_STATUS_COUNT_, 20)
        for code in range(1, _c.SC_STATUS_COUNT_):
            cls = shopcore.error_class(code)
            self.assertTrue(issubclass(cls, shopcore.Error), cls)
            self.assertIsNot(cls, shopcore.Error)
            self.assertEqual(cls.code, code)
            self.assertEqual(cls.name, _c.sc_err_name(code))
            self.assertIs(getattr(shopcore, cls.__name__), cls)
            self.assertIn(cls.__name__, shopcore.__all__)
            self.assertTrue(cls.__doc__)
        self.assertIs(shopcore.error_class(_c.SC_STATUS_COUNT_),
                      shopcore.Error)

    def test_business_outcomes_have_their_names(self):
        expected = {
            "SoldOut": _c.SC_SOLD_OUT,
            "LimitReached": _c.SC_LIMIT_REACHED,
            "Paused": _c.SC_PAUSED,
            "NotActive": _c.SC_NOT_ACTIVE,
            "OutOfStock": _c.SC_OUT_OF_STOCK,
            "InsufficientBalance": _c.SC_INSUFFICIENT_BALANCE,
            "CouponUnavailable": _c.SC_COUPON_UNAVAILABLE,
            "Expired": _c.SC_EXPIRED,
            "InvalidState": _c.SC_INVALID_STATE,
            "Conflict": _c.SC_CONFLICT,
            "IdempotencyMismatch": _c.SC_IDEMPOTENCY_MISMATCH,
            "Ambiguous": _c.SC_AMBIGUOUS,
            "NotFound": _c.SC_NOT_FOUND,
            "Busy": _c.SC_BUSY,
            "Closed": _c.SC_CLOSED,
            "Invalid": _c.SC_INVALID,
            "Corrupt": _c.SC_CORRUPT,
            "InternalError": _c.SC_ERROR,
            "IOFailure": _c.SC_IOERR,
            "NoMemory": _c.SC_NOMEM,
        }
        for name, code in expected.items():
            self.assertEqual(getattr(shopcore, name).code, code, name)

    def test_expected_outcomes(self):
        for cls in (shopcore.SoldOut, shopcore.LimitReached, shopcore.Paused,
                    shopcore.NotActive, shopcore.OutOfStock,
                    shopcore.InsufficientBalance, shopcore.CouponUnavailable,
                    shopcore.Expired, shopcore.InvalidState,
                    shopcore.Conflict):
            self.assertTrue(cls.expected, cls)
        for cls in (shopcore.Invalid, shopcore.NotFound, shopcore.Busy,
                    shopcore.Closed, shopcore.IOFailure, shopcore.Ambiguous,
                    shopcore.Error):
            self.assertFalse(cls.expected, cls)

    def test_builtin_bases(self):
        self.assertTrue(issubclass(shopcore.Invalid, ValueError))
        self.assertTrue(issubclass(shopcore.NotFound, LookupError))
        self.assertTrue(issubclass(shopcore.NoMemory, MemoryError))
        self.assertFalse(issubclass(shopcore.SoldOut, ValueError))

    def test_instance_fields_and_pickle(self):
        e = shopcore.error_for(_c.SC_SOLD_OUT, "policy 3 is sold out")
        self.assertIsInstance(e, shopcore.SoldOut)
        self.assertEqual((e.code, e.name, e.message, str(e)),
                         (_c.SC_SOLD_OUT, "SC_SOLD_OUT",
                          "policy 3 is sold out", "policy 3 is sold out"))
        back = pickle.loads(pickle.dumps(e))
        self.assertIsInstance(back, shopcore.SoldOut)
        self.assertEqual((back.code, back.message), (e.code, e.message))
        self.assertEqual(str(shopcore.Busy()), "database is busy")
        unknown = shopcore.error_for(999, "from the future")
        self.assertIs(type(unknown), shopcore.Error)
        self.assertEqual((unknown.code, unknown.name), (999, "SC_UNKNOWN"))

    def test_stub_names_exactly_the_generated_classes(self):
        stub = os.path.join(os.path.dirname(shopcore.__file__), "_errors.pyi")
        with open(stub) as f:
            tree = ast.parse(f.read())
        in_stub = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        generated = {shopcore.error_class(c).__name__
                     for c in range(1, _c.SC_STATUS_COUNT_)}
        self.assertEqual(in_stub, generated | {"Error"})
        stub_all, = [ast.literal_eval(n.value) for n in tree.body
                     if isinstance(n, ast.Assign)
                     and n.targets[0].id == "__all__"]
        self.assertEqual(sorted(stub_all), sorted(shopcore._errors.__all__))


class RaisedFromCTest(DbTestCase):
    def test_library_message_reaches_the_exception(self):
        policy = self.db.create_policy("one", max_count=1)
        self.db.issue_coupon(policy, 1)
        with self.assertRaises(shopcore.SoldOut) as cm:
            self.db.issue_coupon(policy, 2)
        self.assertEqual(cm.exception.code, _c.SC_SOLD_OUT)
        self.assertEqual(cm.exception.name, "SC_SOLD_OUT")
        self.assertIn(str(policy), cm.exception.message)

    def test_unknown_id_is_not_found(self):
        with self.assertRaises(shopcore.NotFound) as cm:
            self.db.policy(12345)
        self.assertIn("12345", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
