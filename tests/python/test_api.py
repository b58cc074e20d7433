"""The package's surface: every public name documented, typed, and the
enums in step with the C constants."""

import inspect
import os
import unittest

import shopcore
from shopcore import _shopcore as _c


class ApiTest(unittest.TestCase):
    def test_every_public_name_has_a_docstring(self):
        missing = []
        for name in shopcore.__all__:
            obj = getattr(shopcore, name)
            if name == "__version__" or name == "EventHandler":
                continue  # a str and a typing alias
            if not inspect.getdoc(obj):
                missing.append(name)
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for member, value in vars(obj).items():
                    if member.startswith("_"):
                        continue
                    if callable(value) or isinstance(value, property):
                        if not inspect.getdoc(value):
                            missing.append(name + "." + member)
        self.assertEqual(missing, [])

    def test_public_methods_have_type_hints(self):
        for cls in (shopcore.Database, shopcore.Worker, shopcore.ManualClock):
            for member, value in vars(cls).items():
                if member.startswith("_") and member not in ("__enter__",):
                    continue
                fn = value.fget if isinstance(value, property) else value
                if not callable(fn):
                    continue
                hints = fn.__annotations__
                self.assertIn("return", hints, cls.__name__ + "." + member)
        self.assertIn("return", shopcore.open.__annotations__)

    def test_py_typed_marker_and_stubs_ship(self):
        here = os.path.dirname(shopcore.__file__)
        for name in ("py.typed", "_errors.pyi", "_shopcore.pyi"):
            self.assertTrue(os.path.exists(os.path.join(here, name)), name)

    def test_enums_match_the_c_constants(self):
        for enum_cls, prefix in ((shopcore.EventType, "SC_EVENT_"),
                                 (shopcore.OrderStatus, "SC_ORDER_"),
                                 (shopcore.Durability, "SC_DURABILITY_")):
            in_c = {n[len(prefix):]: getattr(_c, n) for n in dir(_c)
                    if n.startswith(prefix) and n.isupper()
                    and n != "SC_EVENT_SCHEMA_VERSION"
                    and n != "SC_EVENT_PAYLOAD_MAX"}
            self.assertEqual({m.name: m.value for m in enum_cls}, in_c)
        for t in shopcore.EventType:
            self.assertNotEqual(_c.sc_event_type_name(t), "unknown")

    def test_low_level_handles_are_checked(self):
        # The private module refuses anything but its own handles.
        with self.assertRaises(TypeError):
            _c.sc_coupon_issue(None, 1, 1)
        with self.assertRaises(TypeError):
            _c.scpy_close(object())
        with self.assertRaises(TypeError):
            _c.scpy_worker_stop(42)


if __name__ == "__main__":
    unittest.main()
