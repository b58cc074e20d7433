/* The operations both backends run: their structs, shared by the module
 * that builds an operation (coupon.c, stock.c, ...) and the PostgreSQL
 * backend's descriptor of it (pg/coupon.c, pg/catalog.c). */
#ifndef SC_OPS_H
#define SC_OPS_H

#include "internal.h"

/* coupon.c */
typedef struct policy_create_op {
  sc__op base;
  const sc_coupon_policy_spec *spec;
  int32_t per_user_limit;
  sc_id id;
} policy_create_op;

typedef struct policy_pause_op {
  sc__op base;
  sc_id policy;
  int paused;
} policy_pause_op;

typedef struct issue_op {
  sc__op base;
  sc_id policy, user, coupon;
} issue_op;

/* stock.c */
typedef struct product_create_op {
  sc__op base;
  const char *name;
  int64_t price, stock;
  sc_id id;
} product_create_op;

typedef struct restock_op {
  sc__op base;
  sc_id product;
  int64_t qty;
} restock_op;

/* account.c */
typedef struct deposit_op {
  sc__op base;
  sc_id user;
  int64_t amount;
  const char *key; /* NULL = not idempotent */
  unsigned char request[16];
} deposit_op;

/* order.c */
/* Orders expired per write operation: one call of sc_orders_expire_due
 * loops over as many batches as it needs, so no single batch holds the
 * writer (and every caller queued behind it) for long. */
#define EXPIRE_BATCH 256
/* Lines kept inside the operation itself; longer orders allocate. */
#define SMALL_LINES 8
/* The canonical bytes of a checkout request (see encode_request). */
#define REQUEST_LEN(n) (8 * (5 + 3 * (size_t)(n)))

typedef struct order_row {
  sc_id id, user, coupon; /* coupon 0 = none */
  int status;
  int64_t total, discount, expires_at_ms;
} order_row;

typedef struct line_item {
  sc_id product;
  int64_t qty, expected, price; /* expected < 0: no version check */
} line_item;

typedef struct checkout_op {
  sc__op base;
  sc_id user, coupon;
  int64_t ttl_ms;
  const char *key;
  line_item *items; /* sorted by product */
  size_t n;
  unsigned char *request; /* canonical bytes, when keyed */
  size_t request_len;
  sc_id order;
  line_item small_items[SMALL_LINES];
  unsigned char small_request[REQUEST_LEN(SMALL_LINES)];
} checkout_op;

typedef struct order_op {
  sc__op base;
  sc_id order;
} order_op;

/* A position in the due orders: (expires_at_ms, id). */
typedef struct expire_mark {
  int64_t ms;
  sc_id id;
} expire_mark;

/* One expiry pass: where its next batch starts, and what the batch did. A
 * batch reads `from` and writes `to`, so running it again (a replayed
 * operation) does the same; the caller moves `from` on once it committed. */
typedef struct expire_pass {
  int64_t due_at; /* due means expires_at_ms <= due_at */
  expire_mark from, to;
  int loaded, expired, skipped; /* of the last batch */
} expire_pass;

typedef struct expire_op {
  sc__op base;
  expire_pass pass;
  order_row rows[EXPIRE_BATCH];
} expire_op;

/* outbox.c */
/* A one-event write: ack, nack or requeue. */
typedef struct event_op {
  sc__op base;
  sc__settle s; /* verdict 0: requeue */
} event_op;

typedef struct requeue_all_op {
  sc__op base;
  int n;
} requeue_all_op;

/* The bytes of a nack's reason kept: at most 500, cut before a UTF-8
 * character that would not fit whole. */
size_t sc__reason_len(const char *reason);

/* sc_outbox_dead_list's rows on PostgreSQL (pg/outbox.c): fills out[0..*n)
 * as the SQLite listing does (payload and reason in one allocation). */
int sc__pg_dead_fill(sc_db *db, sc_id after, int max, sc_dead_event *out,
                     int *n);

/* sc_product_get on PostgreSQL (pg/catalog.c); out untouched on failure. */
int sc__pg_product_get(sc_db *db, sc_id product, sc_product *out);

/* The row sc_coupon_policy_get reads, on PostgreSQL (pg/coupon.c), where
 * issued_count is the sum of the policy's slots: max_count, issued_count,
 * per_user_limit, paused. */
int sc__pg_policy_read(sc_db *db, sc_id policy, int64_t cols[4]);

/* repair.c: an administrator's corrections (pg/repair.c on PostgreSQL). */
typedef struct repair_op {
  sc__op base;
  bool dry_run;
  int changes, refused;
  sc__strbuf report; /* one line per change or refusal */
} repair_op;

/* The PostgreSQL descriptors of each (pg/pg.h). */
struct sc__op_pg;
extern const struct sc__op_pg sc__pg_policy_create, sc__pg_policy_pause,
    sc__pg_coupon_issue, sc__pg_product_create, sc__pg_product_restock,
    sc__pg_deposit, sc__pg_checkout, sc__pg_order_pay, sc__pg_order_cancel,
    sc__pg_orders_expire, sc__pg_expire_round, sc__pg_outbox_round,
    sc__pg_outbox_event, sc__pg_requeue_all, sc__pg_purge, sc__pg_repair;

#endif /* SC_OPS_H */
