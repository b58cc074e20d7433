"""The outbox from Python: events decoded in C into dicts, claim, ack and
nack with retries."""

import unittest

import shopcore
from shopcore import EventType

from sctest import DbTestCase

START_MS = 5_000_000


class OutboxTest(DbTestCase):
    def setUp(self):
        self.clock = shopcore.ManualClock(START_MS)
        self.open_options = {"clock": self.clock, "outbox_retry_base_ms": 100,
                             "outbox_max_attempts": 3}
        super().setUp()

    def drain(self):
        """Claims and acks everything deliverable; returns the events."""
        seen = []
        while True:
            batch = self.db.claim_events(max=100, lease_ms=60_000)
            if not batch:
                return seen
            for ev in batch:
                self.db.ack(ev)
            seen.extend(batch)

    def test_every_change_is_an_event_with_its_fields(self):
        policy = self.db.create_policy("p", max_count=5, discount_amount=50)
        coupon = self.db.issue_coupon(policy, 7)
        self.db.deposit(7, 1000)
        product = self.db.create_product("tea", price=300, stock=3)
        order = self.db.checkout(7, {product: 2}, coupon=coupon,
                                 ttl_ms=60_000)
        self.db.pay(order)
        self.db.pause_policy(policy)
        self.db.resume_policy(policy)
        events = self.drain()
        by_type = {ev.type: ev for ev in events}
        self.assertEqual(sorted(by_type), sorted([
            EventType.COUPON_ISSUED, EventType.DEPOSIT,
            EventType.ORDER_CREATED, EventType.ORDER_PAID,
            EventType.POLICY_PAUSED, EventType.POLICY_RESUMED]))
        self.assertEqual(len(events), 6)
        self.assertEqual(len({ev.id for ev in events}), 6)

        issued = by_type[EventType.COUPON_ISSUED]
        self.assertEqual(issued.type_name, "coupon_issued")
        self.assertEqual(issued.aggregate_id, coupon)
        self.assertEqual(issued.data, {"type": 1, "v": 1, "at_ms": START_MS,
                                       "user": 7, "policy": policy,
                                       "coupon": coupon})
        self.assertEqual(by_type[EventType.DEPOSIT].data["amount"], 1000)
        created = by_type[EventType.ORDER_CREATED]
        self.assertEqual(created.aggregate_id, order)
        self.assertEqual(created.seq, 1)
        self.assertEqual(created.data["order"], order)
        self.assertEqual(created.data["amount"], 600 - 50)
        self.assertEqual(created.data["discount"], 50)
        self.assertEqual(created.data["coupon"], coupon)
        self.assertEqual(created.data["expires_at_ms"], START_MS + 60_000)
        paid = by_type[EventType.ORDER_PAID]
        self.assertEqual((paid.aggregate_id, paid.seq), (order, 2))
        self.assertNotIn("expires_at_ms", paid.data)
        paused = by_type[EventType.POLICY_PAUSED]
        self.assertEqual(paused.data, {"type": paused.type, "v": 1,
                                       "at_ms": START_MS, "policy": policy})
        for ev in events:
            self.assertEqual(ev.attempts, 0)
            self.assertEqual(ev.created_at_ms, START_MS)
            self.assertEqual(ev.data["type"], int(ev.type))
            self.assertIsInstance(ev, shopcore.Event)
        # Events are immutable and hashable by value.
        with self.assertRaises(AttributeError):
            paid.seq = 3
        self.assertEqual(len({paid, paid}), 1)

    def test_nothing_to_claim(self):
        self.assertEqual(self.db.claim_events(), [])

    def test_one_event_per_aggregate_until_acked(self):
        self.db.deposit(7, 100)
        self.db.deposit(7, 200)
        first = self.db.claim_events()
        self.assertEqual([ev.data["amount"] for ev in first], [100])
        self.assertEqual(self.db.claim_events(), [])  # leased, and in order
        self.db.ack(first[0].id, claim=first[0].claim)
        second = self.db.claim_events()
        self.assertEqual([(ev.seq, ev.data["amount"]) for ev in second],
                         [(2, 200)])
        self.db.ack(second[0])

    def test_nack_retries_later(self):
        self.db.deposit(7, 100)
        ev, = self.db.claim_events()
        self.db.nack(ev, reason="consumer down")
        self.assertEqual(self.db.claim_events(), [])  # backing off
        self.clock.advance(1000)
        again, = self.db.claim_events()
        self.assertEqual((again.id, again.attempts), (ev.id, 1))
        self.db.ack(again)
        self.assertEqual(self.db.claim_events(), [])

    def test_lease_expiry_redelivers(self):
        self.db.deposit(7, 100)
        ev, = self.db.claim_events(lease_ms=1000)
        self.clock.advance(1000)
        again, = self.db.claim_events(lease_ms=1000)
        self.assertEqual(again.id, ev.id)
        self.db.ack(again)

    def kill(self, amount):
        """Deposits and fails the event until it is dead; returns its last
        delivery."""
        self.db.deposit(7, amount)
        for attempt in range(3):  # outbox_max_attempts
            self.clock.advance(10_000)
            ev, = self.db.claim_events()
            self.assertEqual(ev.attempts, attempt)
            self.db.nack(ev, reason="attempt %d failed" % attempt)
        return ev

    def test_dead_events_and_requeue(self):
        last = self.kill(100)
        dead_id = last.id
        self.db.deposit(7, 200)  # held back behind the dead one
        self.clock.advance(10_000)
        self.assertEqual(self.db.claim_events(), [])
        stats = self.db.outbox_stats()
        self.assertIsInstance(stats, shopcore.OutboxStats)
        self.assertEqual((stats.pending, stats.dead), (1, 1))
        dead, = self.db.dead_events()
        self.assertIsInstance(dead, shopcore.DeadEvent)
        self.assertEqual((dead.event.id, dead.event.attempts),
                         (dead_id, 3))
        self.assertEqual(dead.event.data["amount"], 100)
        self.assertEqual(dead.last_error, "attempt 2 failed")
        self.assertEqual(self.db.dead_events(after=dead_id), [])
        with self.assertRaises(shopcore.InvalidState):
            self.db.nack(last)  # its latest claim, but dead
        with self.assertRaises(shopcore.Conflict):
            self.db.nack(dead_id)  # no token: not the latest claim
        self.db.requeue(dead)
        with self.assertRaises(shopcore.InvalidState):
            self.db.requeue(dead_id)  # not dead any more
        again, = self.db.claim_events()
        self.assertEqual((again.id, again.attempts), (dead_id, 0))
        self.db.ack(again)
        self.assertEqual([ev.data["amount"] for ev in self.drain()], [200])
        self.assertEqual(self.db.outbox_stats()[:2], (0, 0))

    def test_requeue_all(self):
        self.kill(100)
        self.db.deposit(8, 5)
        for ev in self.db.claim_events():
            self.db.ack(ev)
        self.assertEqual(self.db.requeue_all(), 1)
        self.assertEqual(self.db.requeue_all(), 0)
        self.assertEqual(len(self.drain()), 1)
        with self.assertRaises(ValueError):
            self.db.dead_events(max=shopcore._db.CLAIM_MAX + 1)
        with self.assertRaises(ValueError):
            self.db.dead_events(after=-1)

    def test_settlement_is_fenced_by_the_claim(self):
        self.db.deposit(7, 100)
        self.db.deposit(7, 200)
        a, = self.db.claim_events(lease_ms=1000)
        self.assertGreater(a.claim, 0)
        self.clock.advance(1000)  # A's lease runs out; B claims it again
        b, = self.db.claim_events(lease_ms=60_000)
        self.assertEqual(b.id, a.id)
        self.assertNotEqual(b.claim, a.claim)
        with self.assertRaises(shopcore.Conflict):
            self.db.nack(a, reason="A is late")
        with self.assertRaises(shopcore.Conflict):
            self.db.ack(a)
        self.assertEqual(self.db.claim_events(), [])  # B still holds it
        self.db.ack(b)
        self.db.ack(b)  # again: no change
        with self.assertRaises(shopcore.InvalidState):
            self.db.nack(b)
        second, = self.db.claim_events()
        self.assertEqual(second.seq, 2)
        self.db.ack(second.id, claim=second.claim)

    def test_never_claimed_cannot_be_settled(self):
        self.db.deposit(7, 100)
        for token in (None, 0, 1):
            with self.assertRaises(shopcore.Conflict):
                self.db.ack(1, claim=token)
            with self.assertRaises(shopcore.Conflict):
                self.db.nack(1, claim=token)
        ev, = self.db.claim_events()
        self.assertEqual(ev.attempts, 0)
        for bad in (-1, 2**63):
            with self.assertRaises(ValueError):
                self.db.ack(ev, claim=bad)
        with self.assertRaises(TypeError):
            self.db.ack(ev, claim="1")
        self.db.ack(ev)

    def test_purge_events(self):
        for amount in (1, 2, 3):
            self.db.deposit(7, amount)
        self.db.deposit(8, 9)
        self.assertEqual(len(self.drain()), 4)
        self.db.deposit(9, 1)  # pending: kept
        self.clock.advance(10)
        self.assertEqual(self.db.purge_events(before=START_MS), 0)
        self.assertEqual(self.db.purge_events(before=START_MS + 1), 4)
        self.assertEqual(self.db.purge_events(before=START_MS + 1), 0)
        self.assertIn("shopcore_outbox_events_purged_total 4",
                      self.db.metrics_prometheus())
        self.assertEqual(self.db.verify(), "ok")
        # The account's sequence goes on after its purged events.
        self.db.deposit(7, 4)
        seqs = {(ev.aggregate_id, ev.seq) for ev in self.drain()}
        self.assertEqual(seqs, {(7, 4), (9, 1)})
        self.assertEqual(self.db.outbox_stats()[:2], (0, 0))
        with self.assertRaises(TypeError):
            self.db.purge_events(before="now")
        with self.assertRaises(ValueError):
            self.db.purge_events(before=2**63)

    def test_retention_option(self):
        with self.assertRaises(ValueError):
            shopcore.open(self.path + ".r", outbox_retention_ms=-1)

    def test_unknown_event(self):
        with self.assertRaises(shopcore.NotFound):
            self.db.ack(999)
        with self.assertRaises(shopcore.NotFound):
            self.db.nack(999)
        with self.assertRaises(shopcore.NotFound):
            self.db.requeue(999)


if __name__ == "__main__":
    unittest.main()
