/* http_shop's pieces on the loop: connections (server.c), the calls into
 * libshopcore (shop.c) and the server's own metrics (stats.c). Everything
 * here runs on the loop's thread, except the work functions shop.c hands to
 * libuv's thread pool. */
#ifndef HTTP_SHOP_SERVER_H
#define HTTP_SHOP_SERVER_H

#include <uv.h>

#include "http.h"

/* ---- metrics ---- */

#define HS_N_BUCKETS 34
#define HS_N_EVENT_TYPES 16

typedef struct hs_stats {
  /* answers by route and status code (100..599) */
  uint64_t by_code[HS_ROUTE_COUNT_][500];
  /* latency histogram, from a complete request to its answer queued */
  uint64_t buckets[HS_ROUTE_COUNT_][HS_N_BUCKETS + 1];
  double sum_s[HS_ROUTE_COUNT_];
  uint64_t events[HS_N_EVENT_TYPES]; /* the worker's, by SC_EVENT_* */
} hs_stats;

void hs_stats_record(hs_stats *s, hs_route route, int status, double ms);
/* The server's metrics in the Prometheus text format, malloc'ed. */
char *hs_stats_text(const hs_stats *s, int connections);

/* ---- the server and its connections ---- */

typedef struct hs_conn hs_conn;

typedef struct hs_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sig_int, sig_term;
  sc_db *db;
  sc_async *async;
  sc_worker *worker;
  hs_conn *conns;
  int n_conns;
  bool stopping, finishing;
  char rbuf[64 * 1024]; /* every read lands here first */
  hs_stats stats;
} hs_server;

typedef enum { HS_READING, HS_CALLING, HS_WRITING } hs_phase;

struct hs_conn {
  uv_tcp_t tcp;
  hs_server *srv;
  hs_reader reader;
  char *in; /* read, not yet parsed (what follows a pipelined request) */
  size_t in_len, in_cap;
  hs_phase phase;
  bool reading, closing, close_after, keep;
  uint64_t t0_ns; /* when the request was complete */
  hs_call call;
  /* the call in flight */
  sc_async_req areq;
  uv_work_t work;
  int work_rc;
  sc_id work_id;
  sc_account work_account;
  char work_err[256];
  /* the answer being written */
  uv_write_t wr;
  char *out;
  hs_conn *prev, *next;
};

/* Sends an answer for the connection's request (any status), records it in
 * the metrics and goes on with the connection's next request. */
void hs_answer(hs_conn *c, int status, const char *content_type,
               const char *body, size_t len, const char *extra_headers);
/* An error answer with a JSON body {"error","message"}. */
void hs_answer_error(hs_conn *c, int status, const char *error,
                     const char *message, const char *extra_headers);

/* Routes the connection's complete request and makes its call (shop.c). */
void hs_shop_dispatch(hs_conn *c);
/* The worker's event handler: counts the events (shop.c). */
int hs_shop_on_event(const sc_event *ev, void *ud);

#endif
