/* The HTTP side of http_shop, without sockets or a database: requests are
 * read with http-parser (one complete request at a time, so answers go out
 * in order on a keep-alive connection), checked and routed to a validated
 * call with jansson, and answers are written as plain HTTP/1.1 text. The
 * libFuzzer target drives exactly this code. */
#ifndef HTTP_SHOP_HTTP_H
#define HTTP_SHOP_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shopcore.h"

#define HS_BODY_MAX (64 * 1024) /* larger bodies are 413 */
#define HS_URL_MAX 2048         /* longer request targets are 414 */
#define HS_KEY_MAX 200          /* longest Idempotency-Key */
#define HS_LINES_MAX 100        /* most lines in one order */
#define HS_RID_MAX 64           /* longest X-Request-Id echoed */

/* ---- reading requests ---- */

typedef enum {
  HS_NEED_MORE = 0, /* feed more bytes */
  HS_REQUEST,       /* a complete request is in the reader */
  HS_BAD            /* unreadable: answer bad_status, then close */
} hs_state;

typedef struct hs_reader {
  http_parser parser;
  hs_state state;
  int bad_status; /* 400, 413, 414, 431 (500: no memory) when HS_BAD */
  const char *bad_reason;
  char *url;
  size_t url_len;
  char *body;
  size_t body_len, body_cap;
  char field[32]; /* the header name being read (longer ones never match) */
  size_t field_len;
  bool field_done, in_key, in_rid;
  char key[HS_KEY_MAX + 1]; /* Idempotency-Key, "" when absent */
  size_t key_len;
  bool key_seen;
  /* X-Request-Id, echoed in the answer when it is 1 to HS_RID_MAX visible
   * ASCII characters ("" otherwise), so a client can match answers to
   * requests (bench/http's wrk script does). */
  char rid[HS_RID_MAX + 1];
  size_t rid_len;
  bool rid_bad;
  bool keep_alive; /* of the complete request */
} hs_reader;

void hs_reader_init(hs_reader *r);
/* Reads bytes until one request is complete or the input is bad; returns how
 * many it used (the rest belongs to the next request). */
size_t hs_reader_feed(hs_reader *r, const char *data, size_t len);
/* Forgets the complete request, ready for the next one. */
void hs_reader_next(hs_reader *r);
void hs_reader_free(hs_reader *r);
const char *hs_reader_method(const hs_reader *r);

/* ---- routing and validation ---- */

typedef enum {
  HS_PRODUCT_CREATE,
  HS_PRODUCT_GET,
  HS_POLICY_CREATE,
  HS_COUPON_ISSUE,
  HS_DEPOSIT,
  HS_CHECKOUT,
  HS_ORDER_PAY,
  HS_ORDER_CANCEL,
  HS_ORDER_GET,
  HS_METRICS,
  HS_HEALTHZ,
  HS_UNROUTED, /* no route matched, or the request was unreadable */
  HS_ROUTE_COUNT_
} hs_route;

/* "POST /orders" ... for metrics and logs. */
const char *hs_route_name(hs_route route);

/* A request that passed every check the server can make without the
 * database. Strings and arrays are owned (hs_call_free). */
typedef struct hs_call {
  hs_route route;
  sc_id id; /* the path's id (product, policy, user or order) */
  char *name;
  int64_t price, stock;
  int64_t max_count, per_user_limit, discount_amount;
  sc_id user;
  int64_t amount;
  sc_line *lines;
  size_t n_lines;
  sc_id coupon; /* 0 = none */
  char *key;    /* Idempotency-Key or NULL */
} hs_call;

/* Why a request was refused before reaching the database. */
typedef struct hs_refusal {
  int status;        /* 400, 404, 405 */
  const char *error; /* "bad_request", "not_found", "method_not_allowed" */
  const char *allow; /* the Allow header of a 405 */
  char message[160];
} hs_refusal;

/* Routes and validates the reader's complete request into call. Returns 0,
 * or the refusal's HTTP status (call is then empty). */
int hs_route_request(const hs_reader *r, hs_call *call, hs_refusal *why);
void hs_call_free(hs_call *call);

/* ---- answers ---- */

/* A whole HTTP/1.1 response, headers and body, malloc'ed (NULL when out of
 * memory). extra_headers is "" or complete "Name: value\r\n" lines. */
char *hs_response(int status, const char *content_type, const char *body,
                  size_t body_len, bool keep_alive, const char *extra_headers,
                  size_t *len_out);
/* The JSON body {"error": error, "message": message}, malloc'ed; bytes of
 * message that are not printable ASCII become '?' (an sc_errmsg may quote a
 * client's bytes cut at any point). */
char *hs_error_json(const char *error, const char *message);
/* The reason phrase of a status code. */
const char *hs_reason(int status);

#endif
