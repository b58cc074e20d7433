#!/usr/bin/env python3
"""examples/http_shop end to end: every route's answer and JSON body, every
class of error (400, 404, 405, 409, 413, 503), keep-alive and pipelining,
and a clean stop on SIGTERM with requests in flight.

usage: test_http_shop.py HTTP_SHOP SHOPCORE  (stdlib only)"""
import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HTTP_SHOP = SHOPCORE = None


class Server:
    def __init__(self, db, *extra):
        self.proc = subprocess.Popen(
            [HTTP_SHOP, "--db", db, "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
        if not m:
            self.proc.kill()
            raise RuntimeError(f"no start: {line}{self.proc.stderr.read()}")
        self.port = int(m.group(1))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


class Shop(unittest.TestCase):
    """One server for the route tests; each test makes its own objects."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(
            dir=os.environ.get("SC_TEST_TMPDIR"))
        cls.db = os.path.join(cls.tmp.name, "shop.db")
        cls.srv = Server(cls.db)
        cls.conn = http.client.HTTPConnection("127.0.0.1", cls.srv.port,
                                              timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        rc, err = cls.srv.stop()
        verify = subprocess.run([SHOPCORE, "verify", "--db", cls.db],
                                capture_output=True, text=True)
        cls.tmp.cleanup()
        assert rc == 0, err
        assert "http_shop: stopped" in err, err
        assert verify.returncode == 0, verify.stdout + verify.stderr

    def req(self, method, path, body=None, headers=None, raw=None):
        """(status, parsed JSON or text, response headers), on the one
        keep-alive connection every test shares."""
        data = raw if raw is not None else (
            json.dumps(body) if body is not None else None)
        self.conn.request(method, path, data, headers or {})
        r = self.conn.getresponse()
        text = r.read().decode()
        ctype = r.getheader("Content-Type", "")
        parsed = json.loads(text) if ctype == "application/json" else text
        return r.status, parsed, r

    def ok(self, method, path, body=None, status=200, headers=None):
        st, j, _ = self.req(method, path, body, headers)
        self.assertEqual(st, status, j)
        return j

    def refused(self, method, path, body, status, error, raw=None):
        st, j, r = self.req(method, path, body, raw=raw)
        self.assertEqual(st, status, j)
        self.assertEqual(j["error"], error, j)
        self.assertTrue(j["message"], j)
        return j, r

    def product(self, stock=10, price=1000):
        return self.ok("POST", "/products",
                       {"name": "p", "price": price, "stock": stock}, 201)["id"]

    def policy(self, max_count=10, discount=100):
        return self.ok("POST", "/coupon-policies",
                       {"name": "c", "max_count": max_count,
                        "per_user_limit": 1, "discount_amount": discount},
                       201)["id"]

    user_seq = 1000

    def user(self, amount=100_000):
        Shop.user_seq += 1
        self.ok("POST", f"/accounts/{Shop.user_seq}/deposit",
                {"amount": amount})
        return Shop.user_seq

    # ---- the routes ----

    def test_healthz(self):
        self.assertEqual(self.req("GET", "/healthz")[0], 200)

    def test_product(self):
        pid = self.product(stock=7)
        j = self.ok("GET", f"/products/{pid}")
        self.assertEqual(j, {"id": pid, "total": 7, "reserved": 0,
                             "available": 7, "version": 0})

    def test_coupon(self):
        pol, u = self.policy(max_count=2), self.user()
        j = self.ok("POST", f"/coupon-policies/{pol}/issue", {"user": u}, 201)
        self.assertEqual(set(j), {"coupon"})
        self.assertGreater(j["coupon"], 0)
        self.refused("POST", f"/coupon-policies/{pol}/issue", {"user": u},
                     409, "SC_LIMIT_REACHED")
        self.ok("POST", f"/coupon-policies/{pol}/issue", {"user": self.user()},
                201)
        self.refused("POST", f"/coupon-policies/{pol}/issue",
                     {"user": self.user()}, 409, "SC_SOLD_OUT")
        self.refused("POST", "/coupon-policies/999999/issue", {"user": u},
                     404, "SC_NOT_FOUND")

    def test_deposit_idempotent(self):
        u = self.user(amount=500)
        key = {"Idempotency-Key": f"dep-{u}"}
        j = self.ok("POST", f"/accounts/{u}/deposit", {"amount": 250},
                    headers=key)
        self.assertEqual(j, {"balance": 750, "held": 0, "available": 750})
        j = self.ok("POST", f"/accounts/{u}/deposit", {"amount": 250},
                    headers=key)
        self.assertEqual(j["balance"], 750)  # the replay changed nothing
        st, j, _ = self.req("POST", f"/accounts/{u}/deposit", {"amount": 9},
                            headers=key)
        self.assertEqual((st, j["error"]), (409, "SC_IDEMPOTENCY_MISMATCH"))

    def test_order_pay_cancel_get(self):
        pid, pol, u = self.product(price=1000), self.policy(), self.user()
        coupon = self.ok("POST", f"/coupon-policies/{pol}/issue",
                         {"user": u}, 201)["coupon"]
        body = {"user": u, "lines": [{"product": pid, "qty": 2}],
                "coupon": coupon}
        key = {"Idempotency-Key": f"order-{u}"}
        j = self.ok("POST", "/orders", body, 201, key)
        self.assertEqual(set(j), {"order", "total", "discount",
                                  "expires_at_ms"})
        self.assertEqual((j["total"], j["discount"]), (1900, 100))
        self.assertGreater(j["expires_at_ms"], time.time() * 1000)
        again = self.ok("POST", "/orders", body, 201, key)
        self.assertEqual(again["order"], j["order"])  # a replay
        oid = j["order"]
        got = self.ok("GET", f"/orders/{oid}")
        self.assertEqual((got["id"], got["user"], got["status"],
                          got["total"]), (oid, u, "pending", 1900))
        self.assertEqual(self.ok("GET", f"/products/{pid}")["reserved"], 2)
        self.assertEqual(self.ok("POST", f"/orders/{oid}/pay"),
                         {"status": "confirmed"})
        self.assertEqual(self.ok("GET", f"/orders/{oid}")["status"],
                         "confirmed")
        self.refused("POST", f"/orders/{oid}/cancel", None, 409,
                     "SC_INVALID_STATE")
        # a second order, cancelled: its stock comes back
        oid2 = self.ok("POST", "/orders",
                       {"user": u, "lines": [{"product": pid, "qty": 3}]},
                       201)["order"]
        self.assertEqual(self.ok("POST", f"/orders/{oid2}/cancel"),
                         {"status": "cancelled"})
        self.assertEqual(self.ok("GET", f"/products/{pid}")["available"], 8)
        self.refused("GET", "/orders/999999", None, 404, "SC_NOT_FOUND")
        self.refused("POST", "/orders/999999/pay", None, 404, "SC_NOT_FOUND")

    def test_business_refusals_are_409(self):
        pid, u = self.product(stock=1, price=1000), self.user(amount=5000)
        self.refused("POST", "/orders",
                     {"user": u, "lines": [{"product": pid, "qty": 2}]},
                     409, "SC_OUT_OF_STOCK")
        rich = self.product(stock=100, price=10_000)
        self.refused("POST", "/orders",
                     {"user": u, "lines": [{"product": rich, "qty": 1}]},
                     409, "SC_INSUFFICIENT_BALANCE")
        self.refused("POST", "/orders",
                     {"user": u, "lines": [{"product": 999999, "qty": 1}]},
                     404, "SC_NOT_FOUND")

    def test_metrics(self):
        pol, u = self.policy(), self.user()
        self.ok("POST", f"/coupon-policies/{pol}/issue", {"user": u}, 201)
        deadline = time.time() + 10
        while True:  # the worker counts the event once it is durable
            st, text, r = self.req("GET", "/metrics")
            if 'http_shop_events_total{type="coupon_issued"}' in text:
                break
            self.assertLess(time.time(), deadline, text)
            time.sleep(0.05)
        self.assertEqual(st, 200)
        self.assertTrue(r.getheader("Content-Type").startswith("text/plain"))
        self.assertIn("shopcore_operations_total", text)
        self.assertRegex(text, r'http_shop_requests_total\{route="POST '
                         r'/coupon-policies/\{id\}/issue",code="201"\} \d+')
        self.assertIn('http_shop_request_duration_seconds_bucket{route="GET '
                      '/metrics",le="+Inf"}', text)

    def test_request_id_is_echoed(self):
        _, _, r = self.req("GET", "/healthz", headers={"X-Request-Id": "a-1"})
        self.assertEqual(r.getheader("X-Request-Id"), "a-1")
        _, _, r = self.req("GET", "/nope", headers={"X-Request-Id": "b-2"})
        self.assertEqual(r.getheader("X-Request-Id"), "b-2")  # errors too
        for bad in ("a b", "x" * 65):  # not echoed: unsafe or too long
            _, _, r = self.req("GET", "/healthz",
                               headers={"X-Request-Id": bad})
            self.assertIsNone(r.getheader("X-Request-Id"))
        _, _, r = self.req("GET", "/healthz")
        self.assertIsNone(r.getheader("X-Request-Id"))

    # ---- bad requests ----

    def test_bad_json_types_fields_ids(self):
        pid, u = self.product(), self.user()
        bad = [
            ("POST", "/products", None, "{not json"),
            ("POST", "/products", None, "[1,2]"),
            ("POST", "/products", None, ""),
            ("POST", "/products", {"name": "x", "price": "1", "stock": 1}, 0),
            ("POST", "/products", {"name": "x", "price": 1.5, "stock": 1}, 0),
            ("POST", "/products", {"name": "x", "price": True, "stock": 1}, 0),
            ("POST", "/products", {"name": 3, "price": 1, "stock": 1}, 0),
            ("POST", "/products", {"name": "", "price": 1, "stock": 1}, 0),
            ("POST", "/products", {"price": 1, "stock": 1}, 0),
            ("POST", "/products", {"name": "x", "price": 1}, 0),
            ("POST", "/products", None,
             '{"name":"x","price":1,"price":2,"stock":1}'),
            ("POST", "/products", None,
             '{"name":"x","price":99999999999999999999,"stock":1}'),
            ("POST", "/coupon-policies", {"name": "c", "max_count": 1,
                                          "discount_amount": 1}, 0),
            ("POST", "/coupon-policies", {"name": "c", "max_count": 1,
                                          "per_user_limit": 2 ** 40,
                                          "discount_amount": 1}, 0),
            ("POST", "/coupon-policies/1/issue", {"user": 0}, 0),
            ("POST", "/coupon-policies/1/issue", {"user": -5}, 0),
            ("POST", "/coupon-policies/1/issue", {}, 0),
            ("POST", f"/accounts/{u}/deposit", {"amount": "5"}, 0),
            ("POST", "/orders", {"user": u, "lines": []}, 0),
            ("POST", "/orders", {"user": u, "lines": {}}, 0),
            ("POST", "/orders", {"user": u, "lines": [5]}, 0),
            ("POST", "/orders", {"user": u, "lines": [{"product": pid}]}, 0),
            ("POST", "/orders", {"user": u,
                                 "lines": [{"product": 0, "qty": 1}]}, 0),
            ("POST", "/orders", {"user": u,
                                 "lines": [{"product": pid, "qty": 1}],
                                 "coupon": 0}, 0),
            ("POST", "/orders", {"user": u,
                                 "lines": [{"product": pid, "qty": 1}] * 101},
             0),
            ("POST", "/orders", {"lines": [{"product": pid, "qty": 1}]}, 0),
            ("GET", "/products/0", None, None),
            ("GET", "/products/-1", None, None),
            ("GET", "/products/abc", None, None),
            ("GET", "/products/99999999999999999999", None, None),
            ("POST", "/orders/0/pay", None, None),
            ("POST", "/accounts/0/deposit", {"amount": 5}, 0),
        ]
        for method, path, body, raw in bad:
            with self.subTest(path=path, body=body, raw=raw):
                self.refused(method, path, body, 400, "bad_request",
                             raw=raw if isinstance(raw, str) else None)
        # ranges the library checks: its SC_INVALID is a 400 too
        for body in ({"name": "x", "price": -1, "stock": 1},
                     {"name": "x", "price": 1, "stock": -1}):
            self.refused("POST", "/products", body, 400, "SC_INVALID")
        self.refused("POST", "/orders",
                     {"user": u, "lines": [{"product": pid, "qty": 0}]},
                     400, "SC_INVALID")
        self.refused("POST", f"/accounts/{u}/deposit", {"amount": 0}, 400,
                     "SC_INVALID")
        # nothing of the above changed the shop
        self.assertEqual(self.ok("GET", f"/products/{pid}")["reserved"], 0)

    def test_unknown_route_and_wrong_method(self):
        for path in ("/", "/nope", "/products/1/x", "/orders/1/refund",
                     "/products/"):
            with self.subTest(path=path):
                self.refused("GET", path, None, 404, "not_found")
        for method, path, allow in (("GET", "/orders", "POST"),
                                    ("DELETE", "/products/1", "GET"),
                                    ("POST", "/healthz", "GET"),
                                    ("GET", "/orders/1/pay", "POST")):
            with self.subTest(method=method, path=path):
                _, r = self.refused(method, path, None, 405,
                                    "method_not_allowed")
                self.assertEqual(r.getheader("Allow"), allow)

    def test_oversized_bodies_are_413(self):
        big = json.dumps({"name": "x" * (70 * 1024), "price": 1, "stock": 1})
        # by Content-Length, refused before the body is read
        st, j, _ = self.raw(f"POST /products HTTP/1.1\r\nHost: x\r\n"
                            f"Content-Length: {len(big)}\r\n\r\n{big}")
        self.assertEqual((st, j["error"]), (413, "payload_too_large"))
        # chunked, refused once it passes the cap
        chunk = "x" * 40000
        body = "".join(f"{len(chunk):x}\r\n{chunk}\r\n" for _ in range(2))
        st, j, _ = self.raw("POST /products HTTP/1.1\r\nHost: x\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n" + body +
                            "0\r\n\r\n")
        self.assertEqual(st, 413)
        # just under the cap is read (and refused for its content)
        name = "x" * (64 * 1024 - 60)
        ok = json.dumps({"name": name, "price": 1, "stock": "no"})
        self.assertLessEqual(len(ok), 64 * 1024)
        st, j, _ = self.raw(f"POST /products HTTP/1.1\r\nHost: x\r\n"
                            f"Content-Length: {len(ok)}\r\n\r\n{ok}")
        self.assertEqual((st, j["error"]), (400, "bad_request"))

    def raw(self, text):
        """Sends text on a new connection; (status, JSON, closed after)."""
        with socket.create_connection(("127.0.0.1", self.srv.port), 10) as s:
            s.sendall(text.encode())
            data = b""
            while True:
                try:
                    got = s.recv(65536)
                except ConnectionResetError:
                    break
                if not got:
                    break
                data += got
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head)
                if m and len(body) >= int(m.group(1)) and \
                        b"Connection: close" not in head:
                    break
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        return status, json.loads(body), b"Connection: close" in head

    def test_malformed_http_is_400_and_closes(self):
        for text in ("GARBAGE\r\n\r\n", "GET /healthz HTTP/9.9\r\n\r\n",
                     "POST /products HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
                     "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
            with self.subTest(text=text):
                st, j, closed = self.raw(text)
                self.assertEqual(st, 400)
                self.assertTrue(closed)
        long_url = "GET /" + "a" * 5000 + " HTTP/1.1\r\n\r\n"
        st, j, closed = self.raw(long_url)
        self.assertEqual((st, j["error"], closed), (414, "uri_too_long", True))
        huge = "GET /healthz HTTP/1.1\r\nX-Pad: " + "p" * (90 * 1024) + \
            "\r\n\r\n"
        st, j, closed = self.raw(huge)
        self.assertEqual((st, j["error"], closed),
                         (431, "headers_too_large", True))

    def test_connection_close_and_http10(self):
        for text in ("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
                     "GET /healthz HTTP/1.0\r\n\r\n"):
            with self.subTest(text=text):
                st, j, closed = self.raw(text)
                self.assertEqual((st, j, closed), (200, {"ok": True}, True))

    def test_keep_alive_and_pipelining(self):
        pid = self.product(stock=3)
        with socket.create_connection(("127.0.0.1", self.srv.port), 10) as s:
            one = f"GET /products/{pid} HTTP/1.1\r\nHost: x\r\n\r\n"
            two = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall((one + two + one).encode())  # three at once
            data = b""
            while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"}"):
                got = s.recv(65536)
                self.assertTrue(got, data)
                data += got
            codes = re.findall(rb"HTTP/1.1 (\d+)", data)
            self.assertEqual(codes, [b"200", b"404", b"200"])  # in order
            self.assertNotIn(b"Connection: close", data)
            s.sendall(one.encode())  # the connection is still open
            self.assertIn(b"HTTP/1.1 200", s.recv(65536))


class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(
            dir=os.environ.get("SC_TEST_TMPDIR"))
        self.db = os.path.join(self.tmp.name, "shop.db")

    def tearDown(self):
        self.tmp.cleanup()

    def verify(self):
        v = subprocess.run([SHOPCORE, "verify", "--db", self.db],
                           capture_output=True, text=True)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)

    def test_full_queue_is_503_with_retry_after(self):
        srv = Server(self.db, "--queue-max", "1")
        try:
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            c.request("POST", "/coupon-policies", json.dumps(
                {"name": "c", "max_count": 100000, "per_user_limit": 1,
                 "discount_amount": 1}))
            pol = json.loads(c.getresponse().read())["id"]
            c.close()
            seen, statuses = [], set()
            user = iter(range(1, 10 ** 6))
            lock = threading.Lock()

            def burst(_):
                conn = http.client.HTTPConnection("127.0.0.1", srv.port,
                                                  timeout=30)
                for _ in range(20):
                    with lock:
                        u = next(user)
                    conn.request("POST", f"/coupon-policies/{pol}/issue",
                                 json.dumps({"user": u}))
                    r = conn.getresponse()
                    body = json.loads(r.read())
                    statuses.add(r.status)
                    if r.status == 503:
                        seen.append((r.getheader("Retry-After"), body))
                conn.close()

            for _ in range(20):  # a burst fills the one-slot queue at once
                with concurrent.futures.ThreadPoolExecutor(32) as ex:
                    list(ex.map(burst, range(32)))
                if seen:
                    break
            self.assertTrue(seen, statuses)
            self.assertEqual(seen[0][0], "1")
            self.assertEqual(seen[0][1]["error"], "SC_BUSY")
            self.assertLessEqual(statuses, {201, 503})
        finally:
            rc, err = srv.stop()
        self.assertEqual(rc, 0, err)
        self.verify()

    def test_sigterm_answers_in_flight_then_stops(self):
        srv = Server(self.db)
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        c.request("POST", "/coupon-policies", json.dumps(
            {"name": "c", "max_count": 10 ** 6, "per_user_limit": 1,
             "discount_amount": 1}))
        pol = json.loads(c.getresponse().read())["id"]
        idle = socket.create_connection(("127.0.0.1", srv.port), 10)
        answered, cut = [0], [0]
        stop = threading.Event()
        lock = threading.Lock()

        def client(n):
            u = n * 100000
            try:
                conn = http.client.HTTPConnection("127.0.0.1", srv.port,
                                                  timeout=30)
                while True:
                    u += 1
                    conn.request("POST", f"/coupon-policies/{pol}/issue",
                                 json.dumps({"user": u}))
                    r = conn.getresponse()
                    body = json.loads(r.read())  # a whole answer, or raises
                    self.assertEqual(r.status, 201, body)
                    with lock:
                        answered[0] += 1
                    if r.getheader("Connection") == "close":
                        return
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine):
                with lock:
                    cut[0] += 1  # closed between requests: never half an answer

        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            futs = [ex.submit(client, n) for n in range(16)]
            time.sleep(1.0)
            srv.proc.send_signal(signal.SIGTERM)
            for f in futs:
                f.result(timeout=30)  # raises if an answer was wrong
        _, err = srv.proc.communicate(timeout=30)
        self.assertEqual(srv.proc.returncode, 0, err)
        self.assertIn("http_shop: stopped", err)
        self.assertGreater(answered[0], 0)
        self.assertEqual(idle.recv(10), b"")  # the idle connection was closed
        idle.close()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), 5)
        self.verify()
        # every answered coupon is in the database, none more
        st = subprocess.run(["sqlite3", self.db,
                             "SELECT count(*) FROM sc_coupon"],
                            capture_output=True, text=True)
        if st.returncode == 0:
            self.assertEqual(int(st.stdout), answered[0])

    def test_db_as_file_uri(self):
        uri = "file://" + self.db.replace("%", "%25").replace(" ", "%20")
        srv = Server(uri, "--durability", "normal")
        rc, err = srv.stop()
        self.assertEqual(rc, 0, err)
        self.assertTrue(os.path.exists(self.db))
        self.verify()

    def test_port_in_use(self):
        srv = Server(self.db)
        try:
            r = subprocess.run([HTTP_SHOP, "--db", self.db + "2", "--port",
                                str(srv.port)], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("cannot listen", r.stderr)
        finally:
            rc, err = srv.stop()
        self.assertEqual(rc, 0, err)

    def test_bad_arguments(self):
        for args in (["--port", "x"], ["--port", "70000"], ["--queue-max", "0"],
                     ["--durability", "fast"], ["extra"], ["--nope"]):
            r = subprocess.run([HTTP_SHOP, *args], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr, args)
        r = subprocess.run([HTTP_SHOP, "--db", "file:x.db?mode=ro"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no query", r.stderr)
        r = subprocess.run([HTTP_SHOP, "--db", self.tmp.name + "/no/dir/x.db",
                            "--port", "0"], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open", r.stderr)


if __name__ == "__main__":
    HTTP_SHOP, SHOPCORE = sys.argv[1], sys.argv[2]
    unittest.main(argv=[sys.argv[0]], verbosity=2)
