/* The calls into libshopcore. Coupon issue, checkout, pay and cancel use
 * the library's asynchronous calls: queued to the writer, answered from the
 * loop once durable. Creating a product or a policy and depositing have no
 * asynchronous variant, so they run the blocking call on libuv's thread
 * pool (set-up and top-up routes, not the sale's hot path); the loop never
 * waits for a commit either way. Reads (stock, order, metrics) run on the
 * loop itself: each is one indexed SELECT on a pooled WAL read connection,
 * which never waits for the writer, a few microseconds. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

static int http_status_of(int rc) {
  switch (rc) {
    case SC_INVALID:
      return 400;
    case SC_NOT_FOUND:
      return 404;
    case SC_BUSY:
    case SC_CLOSED:
    case SC_CANCELED:
      return 503;
    case SC_EXISTS:
    case SC_IDEMPOTENCY_MISMATCH:
      return 409;
    default:
      /* Business refusals (sold out, out of stock ...) are 409; any other
       * status, including ones added later, is the server's failure. */
      return sc_status_outcome(rc) == SC_OUTCOME_EXPECTED ? 409 : 500;
  }
}

static void answer_sc_error(hs_conn *c, int rc, const char *message) {
  int status = http_status_of(rc);
  hs_answer_error(c, status, sc_err_name(rc), message,
                  status == 503 ? "Retry-After: 1\r\n" : "");
}

static void answer_json(hs_conn *c, int status, json_t *o) {
  char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (text == NULL) {
    hs_answer_error(c, 500, "internal", "out of memory", "");
    return;
  }
  hs_answer(c, status, "application/json", text, strlen(text), "");
  free(text);
}

static const char *order_status_name(int status) {
  switch (status) {
    case SC_ORDER_PENDING:
      return "pending";
    case SC_ORDER_CONFIRMED:
      return "confirmed";
    case SC_ORDER_CANCELLED:
      return "cancelled";
    case SC_ORDER_EXPIRED:
      return "expired";
    default:
      return "unknown";
  }
}

/* ---- reads, on the loop ---- */

static void product_get(hs_conn *c) {
  sc_stock s;
  int rc = sc_stock_get(c->srv->db, c->call.id, &s);
  if (rc != SC_OK) {
    answer_sc_error(c, rc, sc_errmsg(c->srv->db));
    return;
  }
  answer_json(
      c, 200,
      json_pack("{s:I,s:I,s:I,s:I,s:I}", "id", (json_int_t)c->call.id, "total",
                (json_int_t)s.total, "reserved", (json_int_t)s.reserved,
                "available", (json_int_t)s.available, "version",
                (json_int_t)s.version));
}

/* The order's figures; status is the HTTP status of a success. */
static void answer_order(hs_conn *c, sc_id order, int status, bool full) {
  sc_order o;
  int rc = sc_order_get(c->srv->db, order, &o);
  if (rc != SC_OK) {
    answer_sc_error(c, rc, sc_errmsg(c->srv->db));
    return;
  }
  json_t *j = json_pack("{s:I,s:I,s:I,s:I}", full ? "id" : "order",
                        (json_int_t)order, "total", (json_int_t)o.total,
                        "discount", (json_int_t)o.discount, "expires_at_ms",
                        (json_int_t)o.expires_at_ms);
  if (j != NULL && full) {
    json_object_set_new(j, "user", json_integer(o.user));
    json_object_set_new(j, "status", json_string(order_status_name(o.status)));
  }
  answer_json(c, status, j);
}

static void metrics(hs_conn *c) {
  char *lib = NULL;
  int rc = sc_metrics_prometheus(c->srv->db, &lib);
  if (rc != SC_OK) {
    answer_sc_error(c, rc, sc_errmsg(c->srv->db));
    return;
  }
  char *own = hs_stats_text(&c->srv->stats, c->srv->n_conns);
  size_t a = strlen(lib), b = own != NULL ? strlen(own) : 0;
  char *text = malloc(a + b + 1);
  if (own == NULL || text == NULL) {
    hs_answer_error(c, 500, "internal", "out of memory", "");
  } else {
    memcpy(text, lib, a);
    memcpy(text + a, own, b + 1);
    hs_answer(c, 200, "text/plain; version=0.0.4", text, a + b, "");
  }
  free(text);
  free(own);
  sc_free(lib);
}

/* ---- writes without an async variant, on the thread pool ---- */

static void work_run(uv_work_t *w) {
  hs_conn *c = w->data;
  sc_db *db = c->srv->db;
  const hs_call *k = &c->call;
  int rc;
  if (k->route == HS_PRODUCT_CREATE) {
    rc = sc_product_create(db, k->name, k->price, k->stock, &c->work_id);
  } else if (k->route == HS_POLICY_CREATE) {
    sc_coupon_policy_spec spec = {.name = k->name,
                                  .max_count = k->max_count,
                                  .per_user_limit = (int32_t)k->per_user_limit,
                                  .discount_amount = k->discount_amount};
    rc = sc_coupon_policy_create(db, &spec, &c->work_id);
  } else {
    rc = sc_account_deposit(db, k->id, k->amount, k->key);
    if (rc == SC_OK) rc = sc_account_get(db, k->id, &c->work_account);
  }
  c->work_rc = rc;
  /* sc_errmsg is per thread: take it here, on the pool's thread. */
  if (rc != SC_OK) {
    snprintf(c->work_err, sizeof c->work_err, "%s", sc_errmsg(db));
  }
}

static void work_done(uv_work_t *w, int status) {
  hs_conn *c = w->data;
  (void)status; /* nothing cancels pool work */
  if (c->work_rc != SC_OK) {
    answer_sc_error(c, c->work_rc, c->work_err);
  } else if (c->call.route == HS_DEPOSIT) {
    const sc_account *a = &c->work_account;
    answer_json(
        c, 200,
        json_pack("{s:I,s:I,s:I}", "balance", (json_int_t)a->balance, "held",
                  (json_int_t)a->held, "available", (json_int_t)a->available));
  } else {
    answer_json(c, 201, json_pack("{s:I}", "id", (json_int_t)c->work_id));
  }
}

/* ---- the asynchronous calls ---- */

static void async_done(sc_async_req *req, int rc) {
  hs_conn *c = req->data;
  if (rc != SC_OK) {
    answer_sc_error(c, rc, sc_errmsg(c->srv->db));
    return;
  }
  switch (c->call.route) {
    case HS_COUPON_ISSUE:
      answer_json(c, 201, json_pack("{s:I}", "coupon", (json_int_t)req->id));
      break;
    case HS_CHECKOUT:
      answer_order(c, req->id, 201, false);
      break;
    case HS_ORDER_PAY:
      answer_json(c, 200, json_pack("{s:s}", "status", "confirmed"));
      break;
    default:
      answer_json(c, 200, json_pack("{s:s}", "status", "cancelled"));
      break;
  }
}

static int call_async(hs_conn *c) {
  sc_async *a = c->srv->async;
  const hs_call *k = &c->call;
  c->areq.data = c;
  switch (k->route) {
    case HS_COUPON_ISSUE:
      return sc_coupon_issue_async(a, &c->areq, k->id, k->user, async_done);
    case HS_CHECKOUT: {
      sc_checkout_req req = {.user = k->user,
                             .lines = k->lines,
                             .n_lines = k->n_lines,
                             .coupon = k->coupon,
                             .idempotency_key = k->key};
      return sc_checkout_async(a, &c->areq, &req, async_done);
    }
    case HS_ORDER_PAY:
      return sc_order_pay_async(a, &c->areq, k->id, async_done);
    default:
      return sc_order_cancel_async(a, &c->areq, k->id, async_done);
  }
}

void hs_shop_dispatch(hs_conn *c) {
  hs_refusal why;
  if (hs_route_request(&c->reader, &c->call, &why) != 0) {
    hs_answer_error(c, why.status, why.error, why.message,
                    why.status != 405          ? ""
                    : strcmp(why.allow, "GET") ? "Allow: POST\r\n"
                                               : "Allow: GET\r\n");
    return;
  }
  switch (c->call.route) {
    case HS_PRODUCT_GET:
      product_get(c);
      return;
    case HS_ORDER_GET:
      answer_order(c, c->call.id, 200, true);
      return;
    case HS_METRICS:
      metrics(c);
      return;
    case HS_HEALTHZ:
      hs_answer(c, 200, "application/json", "{\"ok\":true}", 11, "");
      return;
    case HS_PRODUCT_CREATE:
    case HS_POLICY_CREATE:
    case HS_DEPOSIT: {
      c->work.data = c;
      int rc = uv_queue_work(c->srv->loop, &c->work, work_run, work_done);
      if (rc != 0) hs_answer_error(c, 500, "internal", uv_strerror(rc), "");
      return;
    }
    default: {
      int rc = call_async(c);
      if (rc != SC_OK) answer_sc_error(c, rc, sc_errmsg(c->srv->db));
      return;
    }
  }
}

int hs_shop_on_event(const sc_event *ev, void *ud) {
  hs_server *srv = ud;
  if (ev->type > 0 && ev->type < HS_N_EVENT_TYPES)
    srv->stats.events[ev->type]++;
  return SC_OK; /* counted: acknowledged */
}
