#!/usr/bin/env python3
"""An event consumer: a background worker hands every state change to a
Python function, at least once and in order per aggregate; deduplicate by
event id. Then the same with the pull API.

    python3 examples/python/consumer.py [shop.db]
"""

import sys
import threading

import shopcore

path = sys.argv[1] if len(sys.argv) > 1 else "shop.db"
seen = set()
done = threading.Event()


def on_event(event: shopcore.Event) -> None:
    if event.id in seen:  # a redelivery: already handled
        return
    seen.add(event.id)
    print("  {:<16} #{:<4} {}".format(event.type_name, event.aggregate_id,
                                      event.data))
    if event.type == shopcore.EventType.ORDER_PAID:
        done.set()
    # Returning acknowledges; raising (or returning False) retries later.


with shopcore.open(path) as db:
    with db.start_worker(on_event):
        print("worker:")
        db.deposit(user=1, amount=5_000)
        tea = db.create_product("tea", price=1_200, stock=10)
        order = db.checkout(user=1, lines={tea: 2})
        db.pay(order)
        done.wait(timeout=10)

    print("pull:")
    db.deposit(user=2, amount=700)
    for event in db.claim_events(max=100, lease_ms=30_000):
        print("  {:<16} #{:<4} {}".format(event.type_name,
                                          event.aggregate_id, event.data))
        db.ack(event)
