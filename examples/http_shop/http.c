/* Reading requests with http-parser and writing answers. The reader pauses
 * the parser at the end of each request: the server answers it before it
 * reads the next, so a pipelining client gets its answers in order. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>

#include "http.h"

static hs_reader *reader_of(http_parser *p) {
  return p->data;
}

static int bad(hs_reader *r, int status, const char *reason) {
  r->state = HS_BAD;
  r->bad_status = status;
  r->bad_reason = reason;
  return -1; /* stops the parser */
}

static int on_message_begin(http_parser *p) {
  hs_reader *r = reader_of(p);
  r->url_len = r->body_len = r->field_len = r->key_len = 0;
  r->field_done = r->in_key = r->key_seen = r->in_rid = r->rid_bad = false;
  r->key[0] = r->rid[0] = '\0';
  r->rid_len = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  hs_reader *r = reader_of(p);
  if (len > HS_URL_MAX - r->url_len) {
    return bad(r, 414, "the request target is too long");
  }
  if (r->url == NULL && (r->url = malloc(HS_URL_MAX + 1)) == NULL) {
    return bad(r, 500, "out of memory");
  }
  memcpy(r->url + r->url_len, at, len);
  r->url_len += len;
  r->url[r->url_len] = '\0';
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  hs_reader *r = reader_of(p);
  if (r->field_done) { /* a new header begins */
    r->field_len = 0;
    r->field_done = false;
  }
  for (size_t i = 0; i < len && r->field_len < sizeof r->field - 1; i++) {
    r->field[r->field_len++] = at[i];
  }
  if (len > 0 && r->field_len == sizeof r->field - 1) r->field_len++;
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  hs_reader *r = reader_of(p);
  if (!r->field_done) { /* the name is complete: is it ours? */
    r->field_done = true;
    r->in_key =
        r->field_len == 15 && strncasecmp(r->field, "idempotency-key", 15) == 0;
    if (r->in_key && r->key_seen) {
      return bad(r, 400, "Idempotency-Key appears twice");
    }
    if (r->in_key) r->key_seen = true;
    r->in_rid =
        r->field_len == 12 && strncasecmp(r->field, "x-request-id", 12) == 0;
    if (r->in_rid && r->rid_len > 0) r->rid_bad = true; /* twice */
  }
  if (r->in_rid) {
    for (size_t i = 0; i < len; i++) {
      if (at[i] <= ' ' || at[i] > '~' || r->rid_len == HS_RID_MAX) {
        r->rid_bad = true;
      } else {
        r->rid[r->rid_len++] = at[i];
      }
    }
    r->rid[r->rid_len] = '\0';
    return 0;
  }
  if (!r->in_key) return 0;
  if (len > HS_KEY_MAX - r->key_len) {
    return bad(r, 400, "the Idempotency-Key is too long");
  }
  memcpy(r->key + r->key_len, at, len);
  r->key_len += len;
  r->key[r->key_len] = '\0';
  return 0;
}

static int on_headers_complete(http_parser *p) {
  hs_reader *r = reader_of(p);
  /* A message without a body has content_length ULLONG_MAX or 0. */
  if (p->content_length != ULLONG_MAX && p->content_length > HS_BODY_MAX) {
    bad(r, 413, "the body is larger than 64 KiB");
    return -1;
  }
  if (p->upgrade) return bad(r, 400, "protocol upgrades are not supported");
  if (p->http_major != 1) return bad(r, 400, "only HTTP/1.x is served");
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  hs_reader *r = reader_of(p);
  if (len > HS_BODY_MAX - r->body_len) {
    return bad(r, 413, "the body is larger than 64 KiB");
  }
  if (r->body_len + len + 1 > r->body_cap) {
    size_t cap = r->body_cap ? r->body_cap : 1024;
    while (cap < r->body_len + len + 1)
      cap *= 2;
    char *nb = realloc(r->body, cap);
    if (nb == NULL) return bad(r, 500, "out of memory");
    r->body = nb;
    r->body_cap = cap;
  }
  memcpy(r->body + r->body_len, at, len);
  r->body_len += len;
  r->body[r->body_len] = '\0';
  return 0;
}

static int on_message_complete(http_parser *p) {
  hs_reader *r = reader_of(p);
  r->state = HS_REQUEST;
  r->keep_alive = http_should_keep_alive(p);
  http_parser_pause(p, 1); /* answer this one before reading on */
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void hs_reader_init(hs_reader *r) {
  memset(r, 0, sizeof *r);
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
}

size_t hs_reader_feed(hs_reader *r, const char *data, size_t len) {
  if (r->state != HS_NEED_MORE || len == 0) return 0;
  size_t used = http_parser_execute(&r->parser, &settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
  if (r->state == HS_NEED_MORE && e != HPE_OK) {
    if (e == HPE_HEADER_OVERFLOW) {
      bad(r, 431, "the headers are too large");
    } else {
      bad(r, 400, http_errno_description(e));
    }
  }
  return used;
}

void hs_reader_next(hs_reader *r) {
  r->state = HS_NEED_MORE;
  http_parser_pause(&r->parser, 0);
}

void hs_reader_free(hs_reader *r) {
  free(r->url);
  free(r->body);
  r->url = r->body = NULL;
}

const char *hs_reader_method(const hs_reader *r) {
  return http_method_str((enum http_method)r->parser.method);
}

/* ---- answers ---- */

const char *hs_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return status < 500 ? "Client Error" : "Internal Server Error";
  }
}

char *hs_response(int status, const char *content_type, const char *body,
                  size_t body_len, bool keep_alive, const char *extra_headers,
                  size_t *len_out) {
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\n%s%s\r\n",
                   status, hs_reason(status), content_type, body_len,
                   keep_alive ? "" : "Connection: close\r\n", extra_headers);
  if (n < 0 || (size_t)n >= sizeof head) return NULL;
  char *out = malloc((size_t)n + body_len);
  if (out == NULL) return NULL;
  memcpy(out, head, (size_t)n);
  if (body_len > 0) memcpy(out + n, body, body_len);
  *len_out = (size_t)n + body_len;
  return out;
}

char *hs_error_json(const char *error, const char *message) {
  char clean[256];
  size_t n = 0;
  for (const unsigned char *s = (const unsigned char *)message;
       *s != '\0' && n < sizeof clean - 1; s++) {
    clean[n++] = *s >= 0x20 && *s <= 0x7e ? (char)*s : '?';
  }
  clean[n] = '\0';
  json_t *o = json_pack("{s:s,s:s}", "error", error, "message", clean);
  char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return text;
}
