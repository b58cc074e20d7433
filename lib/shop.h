/* The shop's operations as the writer and the async calls see them:
 * expiry rounds for the worker, operations prepared for the *_async calls,
 * and the checks and writes an order is made of (stock, accounts, coupon
 * holds, idempotency), run inside an operation on the writer connection. */
#ifndef SC_SHOP_H
#define SC_SHOP_H

#include "writer.h"

/* ---- expiry rounds (order.c), for the worker ---------------------------- */

/* One batch of sc_orders_expire_due as an operation the caller submits
 * itself (with sc__op_try_submit and a done callback), so a libuv loop
 * never waits for it: it expires up to one batch of the orders due at now
 * and reads the earliest deadline still ahead. Orders that cannot be
 * expired (damaged rows) are skipped and counted in the metrics. */
typedef struct sc__expire_round {
  sc__op base;
  int64_t now;              /* set by prepare: due means expires_at_ms <= now */
  int expired;              /* out */
  bool more;                /* out: the batch was full; submit another, which
                               goes on after this one's last order */
  int64_t next_deadline_ms; /* out: earliest PENDING deadline after now; 0 */
  void *rows_;              /* private: the batch's rows */
  void *pass_;              /* private: where the next batch starts */
} sc__expire_round;
int sc__expire_round_init(sc__expire_round *r); /* SC_NOMEM */
/* Sets base (run, kind) and now (the given moment, or the full round's
 * before it, whose pass it continues); base.done is the caller's to set. */
void sc__expire_round_prepare(sc__expire_round *r, int64_t now);
void sc__expire_round_free(sc__expire_round *r);

/* ---- write operations prepared for the *_async calls (async.c) ---- */

/* A write operation built but not submitted: validated on the caller's
 * thread as its blocking call does (sc__fail, nothing allocated on
 * failure), with everything it needs copied in, so the caller's arguments
 * may go away. result: where its id is once it has run (NULL: none). free
 * releases it after its completion. */
typedef struct sc__prepared {
  sc__op *op;
  const sc_id *result;
  void (*free)(sc__op *op);
} sc__prepared;
/* coupon.c */
int sc__coupon_issue_prepare(sc_db *db, sc_id policy, sc_id user,
                             sc__prepared *out);
/* order.c */
int sc__checkout_prepare(sc_db *db, const sc_checkout_req *req,
                         sc__prepared *out);
int sc__order_pay_prepare(sc_db *db, sc_id order, sc__prepared *out);
int sc__order_cancel_prepare(sc_db *db, sc_id order, sc__prepared *out);

/* ---- orders: stock, accounts, coupon holds, idempotency ---------------- */
/* These run inside an operation on the writer connection. Each returns
 * SC_OK or fails op with a message and returns the status. The checks
 * (sc__stock_check, sc__account_check_hold, sc__coupon_discount) change
 * nothing; the writes come after every check, and a failure of theirs
 * (SC_CORRUPT, SC_ERROR: the books are wrong, or a bug) makes the engine
 * roll the batch back (see sc__op_run_fn). */

/* stock.c. Checks that qty (> 0) of product can be reserved, changing
 * nothing; expected_version < 0 means no version check. Writes the unit
 * price. SC_NOT_FOUND, SC_CONFLICT (version differs), SC_OUT_OF_STOCK. */
int sc__stock_check(sc__conn *w, sc__op *op, sc_id product, int64_t qty,
                    int64_t expected_version, int64_t *price_out);
/* Reserves what sc__stock_check allowed and bumps the version by one; the
 * UPDATE keeps its guard, and a refusal now is a bug (SC_ERROR). */
int sc__stock_reserve(sc__conn *w, sc__op *op, sc_id product, int64_t qty);
/* Releases every line of order (version + 1 per product). */
int sc__stock_release_order(sc__conn *w, sc__op *op, sc_id order);
/* Consumes every line of order: total and reserved drop, version stays. */
int sc__stock_consume_order(sc__conn *w, sc__op *op, sc_id order);

/* account.c. Checks that amount (>= 0) can be held against balance -
 * held, changing nothing: SC_NOT_FOUND (no account),
 * SC_INSUFFICIENT_BALANCE. */
int sc__account_check_hold(sc__conn *w, sc__op *op, sc_id user, int64_t amount);
/* Holds what sc__account_check_hold allowed; the UPDATE keeps its guard,
 * and a refusal now is a bug (SC_ERROR). */
int sc__account_hold(sc__conn *w, sc__op *op, sc_id user, int64_t amount);
/* Gives back a hold; SC_CORRUPT if less than amount is held. */
int sc__account_release(sc__conn *w, sc__op *op, sc_id user, int64_t amount);
/* Pays a held amount: balance and held drop, a payment ledger row (-amount,
 * order) is written. SC_CORRUPT if less than amount is held. */
int sc__account_debit(sc_db *db, sc__conn *w, sc__op *op, sc_id user,
                      int64_t amount, sc_id order);

/* coupon.c. Checks that user may use coupon at now (SC_NOT_FOUND,
 * SC_COUPON_UNAVAILABLE: another user's, held, used, policy not active) and
 * computes its discount on subtotal (at most subtotal). Changes nothing. */
int sc__coupon_discount(sc__conn *w, sc__op *op, sc_id coupon, sc_id user,
                        int64_t now, int64_t subtotal, int64_t *discount);
/* available -> held by order; used by order; back to available. */
int sc__coupon_hold(sc__conn *w, sc__op *op, sc_id coupon, sc_id order);
int sc__coupon_use(sc__conn *w, sc__op *op, sc_id order);
int sc__coupon_release(sc__conn *w, sc__op *op, sc_id order);

/* idempotency.c. Scopes of sc_idempotency. */
enum { SC__IDEM_CHECKOUT = 1, SC__IDEM_DEPOSIT = 2 };
/* Writes v big-endian: requests are compared byte for byte, in any process
 * on any machine. */
void sc__idem_put_i64(unsigned char *p, int64_t v);
/* SC_OK with *result_id if key holds this very request, SC_NOT_FOUND (no
 * message) if key is new, SC_IDEMPOTENCY_MISMATCH if it holds another. */
int sc__idem_find(sc__conn *w, sc__op *op, int scope, const char *key,
                  const void *request, size_t len, sc_id *result_id);
/* Records key for request and its result, in the write transaction. */
int sc__idem_record(sc__conn *w, sc__op *op, int scope, const char *key,
                    const void *request, size_t len, sc_id result_id,
                    int64_t now);

#endif /* SC_SHOP_H */
