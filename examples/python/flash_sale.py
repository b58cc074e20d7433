#!/usr/bin/env python3
"""A flash sale: 64 threads race for a 1,000-coupon policy; never one more.

    python3 examples/python/flash_sale.py [threads] [shop.db]
"""

import sys
import threading

import shopcore

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 64
path = sys.argv[2] if len(sys.argv) > 2 else "shop.db"

with shopcore.open(path) as db:
    policy = db.create_policy("flash sale", max_count=1000)
    issued, sold_out = [], []

    def shopper(n):
        user = n * 1_000_000
        while True:
            user += 1
            try:
                issued.append(db.issue_coupon(policy, user))
            except shopcore.SoldOut:  # an expected outcome, not a failure
                sold_out.append(user)
                return

    crowd = [threading.Thread(target=shopper, args=(n,)) for n in range(threads)]
    for t in crowd:
        t.start()
    for t in crowd:
        t.join()

    print("{} threads: {} coupons issued, {} turned away".format(
        threads, len(issued), len(sold_out)))
    print("policy:", db.policy(policy))
    print("verify:", db.verify())
