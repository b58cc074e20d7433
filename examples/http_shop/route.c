/* Routing and validation: the request target picks a route, the method must
 * be the route's, path ids must be positive integers, and the JSON body
 * (parsed by jansson) must be an object with every field of the route, each
 * of the right type. Ranges the library checks itself (price >= 0, qty > 0
 * ...) are left to it: its SC_INVALID is a 400 as well. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

typedef struct route_def {
  const char *pattern; /* "{}" is a path id */
  enum http_method method;
  hs_route route;
} route_def;

static const route_def routes[] = {
    {"/products", HTTP_POST, HS_PRODUCT_CREATE},
    {"/products/{}", HTTP_GET, HS_PRODUCT_GET},
    {"/coupon-policies", HTTP_POST, HS_POLICY_CREATE},
    {"/coupon-policies/{}/issue", HTTP_POST, HS_COUPON_ISSUE},
    {"/accounts/{}/deposit", HTTP_POST, HS_DEPOSIT},
    {"/orders", HTTP_POST, HS_CHECKOUT},
    {"/orders/{}", HTTP_GET, HS_ORDER_GET},
    {"/orders/{}/pay", HTTP_POST, HS_ORDER_PAY},
    {"/orders/{}/cancel", HTTP_POST, HS_ORDER_CANCEL},
    {"/metrics", HTTP_GET, HS_METRICS},
    {"/healthz", HTTP_GET, HS_HEALTHZ},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

const char *hs_route_name(hs_route route) {
  static const char *const names[HS_ROUTE_COUNT_] = {
      [HS_PRODUCT_CREATE] = "POST /products",
      [HS_PRODUCT_GET] = "GET /products/{id}",
      [HS_POLICY_CREATE] = "POST /coupon-policies",
      [HS_COUPON_ISSUE] = "POST /coupon-policies/{id}/issue",
      [HS_DEPOSIT] = "POST /accounts/{user}/deposit",
      [HS_CHECKOUT] = "POST /orders",
      [HS_ORDER_PAY] = "POST /orders/{id}/pay",
      [HS_ORDER_CANCEL] = "POST /orders/{id}/cancel",
      [HS_ORDER_GET] = "GET /orders/{id}",
      [HS_METRICS] = "GET /metrics",
      [HS_HEALTHZ] = "GET /healthz",
      [HS_UNROUTED] = "unrouted"};
  return route >= 0 && route < HS_ROUTE_COUNT_ ? names[route] : "unrouted";
}

static int refuse(hs_refusal *why, int status, const char *error,
                  const char *fmt, ...) {
  why->status = status;
  why->error = error;
  why->allow = NULL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why->message, sizeof why->message, fmt, ap);
  va_end(ap);
  return status;
}

/* Matches path against pattern; *id_at is where "{}" matched (or NULL). */
static bool match(const char *pattern, const char *path, size_t len,
                  const char **id_at, size_t *id_len) {
  const char *end = path + len;
  *id_at = NULL;
  while (*pattern != '\0') {
    if (pattern[0] == '{' && pattern[1] == '}') {
      const char *seg = path;
      while (path < end && *path != '/')
        path++;
      if (path == seg) return false;
      *id_at = seg;
      *id_len = (size_t)(path - seg);
      pattern += 2;
    } else {
      if (path == end || *path != *pattern) return false;
      path++;
      pattern++;
    }
  }
  return path == end;
}

/* A positive decimal id, without sign, spaces or overflow. */
static bool parse_id(const char *s, size_t len, sc_id *out) {
  if (len == 0 || len > 19) return false;
  int64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (v > (INT64_MAX - (s[i] - '0')) / 10) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return v > 0;
}

/* ---- body fields ---- */

static int need_int(json_t *o, const char *k, int64_t *out, hs_refusal *why) {
  json_t *v = json_object_get(o, k);
  if (v == NULL) {
    return refuse(why, 400, "bad_request", "missing field \"%s\"", k);
  }
  if (!json_is_integer(v)) {
    return refuse(why, 400, "bad_request", "\"%s\" must be an integer", k);
  }
  *out = json_integer_value(v);
  return 0;
}

static int need_id(json_t *o, const char *k, sc_id *out, hs_refusal *why) {
  int rc = need_int(o, k, out, why);
  if (rc == 0 && *out <= 0) {
    return refuse(why, 400, "bad_request", "\"%s\" must be an id > 0", k);
  }
  return rc;
}

static int need_int32(json_t *o, const char *k, int64_t *out, hs_refusal *why) {
  int rc = need_int(o, k, out, why);
  if (rc == 0 && (*out < INT32_MIN || *out > INT32_MAX)) {
    return refuse(why, 400, "bad_request", "\"%s\" is out of range", k);
  }
  return rc;
}

static int need_name(json_t *o, char **out, hs_refusal *why) {
  json_t *v = json_object_get(o, "name");
  if (v == NULL)
    return refuse(why, 400, "bad_request", "missing field \"name\"");
  if (!json_is_string(v) || json_string_length(v) == 0) {
    return refuse(why, 400, "bad_request",
                  "\"name\" must be a non-empty string");
  }
  *out = strdup(json_string_value(v));
  return *out != NULL ? 0 : refuse(why, 500, "internal", "out of memory");
}

static int need_lines(json_t *o, hs_call *c, hs_refusal *why) {
  json_t *a = json_object_get(o, "lines");
  if (a == NULL)
    return refuse(why, 400, "bad_request", "missing field \"lines\"");
  size_t n = json_is_array(a) ? json_array_size(a) : 0;
  if (n == 0 || n > HS_LINES_MAX) {
    return refuse(why, 400, "bad_request",
                  "\"lines\" must be an array of 1 to %d lines", HS_LINES_MAX);
  }
  c->lines = calloc(n, sizeof *c->lines);
  if (c->lines == NULL) return refuse(why, 500, "internal", "out of memory");
  c->n_lines = n;
  for (size_t i = 0; i < n; i++) {
    json_t *line = json_array_get(a, i);
    if (!json_is_object(line)) {
      return refuse(why, 400, "bad_request", "each line must be an object");
    }
    int rc = need_id(line, "product", &c->lines[i].product, why);
    if (rc == 0) rc = need_int(line, "qty", &c->lines[i].qty, why);
    if (rc != 0) return rc;
  }
  return 0;
}

static int optional_coupon(json_t *o, hs_call *c, hs_refusal *why) {
  json_t *v = json_object_get(o, "coupon");
  if (v == NULL || json_is_null(v)) return 0;
  return need_id(o, "coupon", &c->coupon, why);
}

/* The fields of c's route from the JSON object o. */
static int read_fields(json_t *o, hs_call *c, hs_refusal *why) {
  int rc = 0;
  switch (c->route) {
    case HS_PRODUCT_CREATE:
      rc = need_name(o, &c->name, why);
      if (rc == 0) rc = need_int(o, "price", &c->price, why);
      if (rc == 0) rc = need_int(o, "stock", &c->stock, why);
      return rc;
    case HS_POLICY_CREATE:
      rc = need_name(o, &c->name, why);
      if (rc == 0) rc = need_int(o, "max_count", &c->max_count, why);
      if (rc == 0)
        rc = need_int32(o, "per_user_limit", &c->per_user_limit, why);
      if (rc == 0)
        rc = need_int(o, "discount_amount", &c->discount_amount, why);
      return rc;
    case HS_COUPON_ISSUE:
      return need_id(o, "user", &c->user, why);
    case HS_DEPOSIT:
      return need_int(o, "amount", &c->amount, why);
    case HS_CHECKOUT:
      rc = need_id(o, "user", &c->user, why);
      if (rc == 0) rc = need_lines(o, c, why);
      if (rc == 0) rc = optional_coupon(o, c, why);
      return rc;
    default:
      return 0;
  }
}

static bool has_body(hs_route route) {
  return route == HS_PRODUCT_CREATE || route == HS_POLICY_CREATE ||
         route == HS_COUPON_ISSUE || route == HS_DEPOSIT ||
         route == HS_CHECKOUT;
}

static int read_body(const hs_reader *r, hs_call *c, hs_refusal *why) {
  json_error_t err;
  json_t *o = json_loadb(r->body != NULL ? r->body : "", r->body_len,
                         JSON_REJECT_DUPLICATES, &err);
  if (o == NULL) {
    return refuse(why, 400, "bad_request", "malformed JSON: %s", err.text);
  }
  int rc = json_is_object(o) ? read_fields(o, c, why)
                             : refuse(why, 400, "bad_request",
                                      "the body must be a JSON object");
  json_decref(o);
  return rc;
}

/* The route of path and method; fills c->route and c->id. */
static int find_route(const hs_reader *r, const char *path, size_t len,
                      hs_call *c, hs_refusal *why) {
  for (size_t i = 0; i < N_ROUTES; i++) {
    const char *id_at;
    size_t id_len = 0;
    if (!match(routes[i].pattern, path, len, &id_at, &id_len)) continue;
    if (r->parser.method != routes[i].method) {
      refuse(why, 405, "method_not_allowed", "%s is not allowed on %.*s",
             hs_reader_method(r), (int)(len > 100 ? 100 : len), path);
      why->allow = routes[i].method == HTTP_GET ? "GET" : "POST";
      return 405;
    }
    c->route = routes[i].route;
    if (id_at != NULL && !parse_id(id_at, id_len, &c->id)) {
      return refuse(why, 400, "bad_request",
                    "the id in the path must be an integer > 0");
    }
    return 0;
  }
  return refuse(why, 404, "not_found", "no route for %.*s",
                (int)(len > 100 ? 100 : len), path);
}

int hs_route_request(const hs_reader *r, hs_call *c, hs_refusal *why) {
  memset(c, 0, sizeof *c);
  c->route = HS_UNROUTED;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (r->url == NULL || http_parser_parse_url(r->url, r->url_len, 0, &u) != 0 ||
      !(u.field_set & (1 << UF_PATH))) {
    return refuse(why, 400, "bad_request", "malformed request target");
  }
  int rc = find_route(r, r->url + u.field_data[UF_PATH].off,
                      u.field_data[UF_PATH].len, c, why);
  if (rc == 0 && has_body(c->route)) rc = read_body(r, c, why);
  if (rc == 0 && r->key_seen &&
      (c->route == HS_DEPOSIT || c->route == HS_CHECKOUT)) {
    c->key = strdup(r->key);
    if (c->key == NULL) rc = refuse(why, 500, "internal", "out of memory");
  }
  if (rc != 0) {
    hs_route route = c->route;
    hs_call_free(c);
    c->route = route; /* for the metrics */
  }
  return rc;
}

void hs_call_free(hs_call *c) {
  free(c->name);
  free(c->lines);
  free(c->key);
  memset(c, 0, sizeof *c);
  c->route = HS_UNROUTED;
}
