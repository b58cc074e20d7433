/* http_shop: a small HTTP/1.1 shop server on one libuv loop, with
 * libshopcore's asynchronous calls and its worker (order expiry, outbox
 * events) on the same loop.
 *
 *   http_shop [--db PATH|URI] [--port N] [--listen ADDR] [--queue-max N]
 *             [--durability full|normal]
 *
 * Defaults: ./shop.db, 127.0.0.1:8080. --port 0 takes a free port; the
 * first line on stdout says which ("listening on ADDR:PORT").
 *
 * A connection answers one request at a time, in order (keep-alive and
 * pipelining both work): the next request is parsed only once the answer
 * to the previous one is written. SIGINT or SIGTERM stop the server: the
 * listener closes, idle connections close, the requests in
 * flight are answered (with "Connection: close"), then the worker stops,
 * the async handle closes, and the database closes last. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

static void conn_process(hs_conn *c);

/* ---- closing ---- */

static void finish_async_closed(sc_async *a, void *ud) {
  hs_server *srv = ud;
  (void)a;
  srv->async = NULL;
}

static void finish_worker_stopped(sc_worker *w, void *ud) {
  hs_server *srv = ud;
  (void)w;
  srv->worker = NULL;
  sc_async_close(srv->async, finish_async_closed, srv);
}

/* Once the last connection is gone, the worker stops, then the async
 * handle closes; the loop then runs out of handles and main closes the db. */
static void maybe_finish(hs_server *srv) {
  if (!srv->stopping || srv->n_conns > 0 || srv->finishing) return;
  srv->finishing = true;
  sc_worker_stop(srv->worker, finish_worker_stopped, srv);
}

static void conn_closed(uv_handle_t *h) {
  hs_conn *c = h->data;
  hs_server *srv = c->srv;
  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    srv->conns = c->next;
  }
  if (c->next != NULL) c->next->prev = c->prev;
  srv->n_conns--;
  hs_reader_free(&c->reader);
  hs_call_free(&c->call);
  free(c->in);
  free(c->out);
  free(c);
  maybe_finish(srv);
}

/* Never while a call is with the database: its callback needs c (see
 * conn_drop). */
static void conn_close(hs_conn *c) {
  if (c->closing) return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void on_signal(uv_signal_t *sig, int signum) {
  hs_server *srv = sig->data;
  (void)signum;
  if (srv->stopping) return;
  srv->stopping = true;
  fprintf(stderr, "http_shop: stopping\n");
  uv_close((uv_handle_t *)&srv->listener, NULL);
  uv_close((uv_handle_t *)&srv->sig_int, NULL);
  uv_close((uv_handle_t *)&srv->sig_term, NULL);
  for (hs_conn *c = srv->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->phase == HS_READING) {
      conn_close(c);
    } else {
      c->close_after = true;
    }
  }
  maybe_finish(srv);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  hs_conn *c = h->data;
  (void)size;
  *buf = uv_buf_init(c->srv->rbuf, sizeof c->srv->rbuf);
}

/* What a client sends while its request is with the database waits in
 * c->in (a pipelining client); past this much, reading pauses until the
 * connection catches up. */
#define HS_IN_MAX (HS_BODY_MAX + 16 * 1024)

static void set_reading(hs_conn *c, bool on);

/* The peer is gone or the connection failed: close now if idle, else once
 * the request in hand is answered (its call needs c until then). */
static void conn_drop(hs_conn *c) {
  if (c->phase == HS_READING) {
    conn_close(c);
  } else {
    c->close_after = true;
    set_reading(c, false);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hs_conn *c = s->data;
  if (nread < 0) {
    conn_drop(c);
    return;
  }
  if (nread == 0) return;
  if (c->in_len + (size_t)nread > c->in_cap) {
    size_t cap = c->in_len + (size_t)nread;
    char *in = realloc(c->in, cap);
    if (in == NULL) {
      conn_drop(c);
      return;
    }
    c->in = in;
    c->in_cap = cap;
  }
  memcpy(c->in + c->in_len, buf->base, (size_t)nread);
  c->in_len += (size_t)nread;
  if (c->phase == HS_READING) {
    conn_process(c);
  } else if (c->in_len > HS_IN_MAX) {
    set_reading(c, false);
  }
}

static void set_reading(hs_conn *c, bool on) {
  if (on == c->reading || c->closing) return;
  c->reading = on;
  if (on) {
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

/* Parses what was read; a complete request goes to the shop. Reading goes
 * on meanwhile (it costs no system call), but the next request is parsed
 * only once this one is answered. */
static void conn_process(hs_conn *c) {
  size_t used = hs_reader_feed(&c->reader, c->in, c->in_len);
  memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= used;
  if (c->reader.state == HS_NEED_MORE) {
    set_reading(c, true);
    return;
  }
  c->phase = HS_CALLING;
  c->t0_ns = uv_hrtime();
  if (c->reader.state == HS_REQUEST) {
    hs_shop_dispatch(c);
  } else { /* unreadable: answer, then close (the stream is out of step) */
    set_reading(c, false);
    c->close_after = true;
    c->call.route = HS_UNROUTED;
    int st = c->reader.bad_status;
    hs_answer_error(c, st,
                    st == 413   ? "payload_too_large"
                    : st == 414 ? "uri_too_long"
                    : st == 431 ? "headers_too_large"
                    : st == 400 ? "bad_request"
                                : "internal",
                    c->reader.bad_reason, "");
  }
}

/* ---- answering ---- */

static void on_written(uv_write_t *w, int status) {
  hs_conn *c = w->data;
  free(c->out);
  c->out = NULL;
  hs_call_free(&c->call);
  if (status < 0 || !c->keep || c->close_after || c->srv->stopping) {
    conn_close(c);
    return;
  }
  c->phase = HS_READING;
  hs_reader_next(&c->reader);
  conn_process(c);
}

void hs_answer(hs_conn *c, int status, const char *content_type,
               const char *body, size_t len, const char *extra_headers) {
  hs_server *srv = c->srv;
  double ms = (double)(uv_hrtime() - c->t0_ns) / 1e6;
  hs_stats_record(&srv->stats, c->call.route, status, ms);
  c->keep = c->reader.state == HS_REQUEST && c->reader.keep_alive &&
            !c->close_after && !srv->stopping;
  size_t n = 0;
  char headers[256];
  const hs_reader *r = &c->reader;
  if (r->state == HS_REQUEST && r->rid_len > 0 && !r->rid_bad) {
    snprintf(headers, sizeof headers, "X-Request-Id: %s\r\n%s", r->rid,
             extra_headers);
    extra_headers = headers;
  }
  c->out =
      hs_response(status, content_type, body, len, c->keep, extra_headers, &n);
  if (c->out == NULL) {
    conn_close(c);
    return;
  }
  c->phase = HS_WRITING;
  c->wr.data = c;
  uv_buf_t b = uv_buf_init(c->out, (unsigned)n);
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    conn_close(c);
  }
}

void hs_answer_error(hs_conn *c, int status, const char *error,
                     const char *message, const char *extra_headers) {
  char *body = hs_error_json(error, message);
  if (body == NULL) {
    hs_answer(c, 500, "text/plain", "out of memory", 13, "");
    return;
  }
  hs_answer(c, status, "application/json", body, strlen(body), extra_headers);
  free(body);
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *l, int status) {
  hs_server *srv = l->data;
  if (status < 0 || srv->stopping) return;
  hs_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  hs_reader_init(&c->reader);
  c->call.route = HS_UNROUTED;
  c->next = srv->conns;
  if (srv->conns != NULL) srv->conns->prev = c;
  srv->conns = c;
  srv->n_conns++;
  if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  set_reading(c, true);
}

static int listen_on(hs_server *srv, const char *addr, int port) {
  struct sockaddr_storage sa;
  int rc = strchr(addr, ':') != NULL
               ? uv_ip6_addr(addr, port, (struct sockaddr_in6 *)&sa)
               : uv_ip4_addr(addr, port, (struct sockaddr_in *)&sa);
  if (rc == 0) rc = uv_tcp_init(srv->loop, &srv->listener);
  srv->listener.data = srv;
  if (rc == 0) rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&sa, 0);
  if (rc == 0) {
    rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
  }
  if (rc != 0) {
    fprintf(stderr, "http_shop: cannot listen on %s:%d: %s\n", addr, port,
            uv_strerror(rc));
    return rc;
  }
  int len = sizeof sa;
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&sa, &len);
  int bound =
      ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                     : ((struct sockaddr_in *)&sa)->sin_port);
  printf("listening on %s:%d\n", addr, bound);
  fflush(stdout);
  return 0;
}

/* ---- main ---- */

static const char usage[] =
    "usage: http_shop [--db PATH|URI] [--port N] [--listen ADDR] "
    "[--queue-max N]\n"
    "                 [--durability full|normal]\n"
    "  --db      the database file, or a file: URI without parameters\n"
    "            (default ./shop.db; created if missing)\n"
    "  --port    TCP port (default 8080; 0 = any free port)\n"
    "  --listen  address to listen on (default 127.0.0.1)\n"
    "  --queue-max  operations waiting for the writer at most (default\n"
    "            4096); past it, writes are 503 with Retry-After\n"
    "  --durability full|normal  full (default): an answered write survives\n"
    "            a power loss; normal: it survives a crash of the process\n"
    "SIGINT or SIGTERM stop it cleanly.\n";

/* The file name of a "file:" URI (RFC 8089: "file:/p", "file:///p",
 * "file://localhost/p", "file:rel"; %XX decoded) into out, or NULL: a
 * query ("?mode=ro" ...) or another host is refused, since the library
 * opens plain files with its own settings. Anything else is a path. */
static const char *db_path(const char *arg, char *out, size_t cap) {
  if (strncmp(arg, "file:", 5) != 0) return arg;
  const char *p = arg + 5;
  if (strncmp(p, "//", 2) == 0) {
    p += 2;
    if (strncmp(p, "localhost/", 10) == 0) p += 9;
    if (*p != '/') return NULL; /* another host */
  }
  size_t n = 0;
  for (; *p != '\0' && *p != '#'; p++) {
    unsigned hex;
    if (*p == '?' || n + 1 >= cap) return NULL;
    if (*p == '%' && sscanf(p + 1, "%2x", &hex) == 1 && hex != 0) {
      out[n++] = (char)hex;
      p += 2;
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
  return n > 0 ? out : NULL;
}

/* A whole decimal int in [lo, hi], or -1. */
static int int_arg(const char *s, int lo, int hi) {
  char *end;
  long v = strtol(s, &end, 10);
  return end != s && *end == '\0' && v >= lo && v <= hi ? (int)v : -1;
}

static int parse_args(int argc, char **argv, const char **db, int *port,
                      const char **addr, sc_options *opts) {
  static const struct option longopts[] = {
      {"db", required_argument, 0, 'd'},
      {"port", required_argument, 0, 'p'},
      {"listen", required_argument, 0, 'l'},
      {"queue-max", required_argument, 0, 'q'},
      {"durability", required_argument, 0, 'D'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (ch) {
      case 'd':
        *db = optarg;
        break;
      case 'l':
        *addr = optarg;
        break;
      case 'p':
        if ((*port = int_arg(optarg, 0, 65535)) < 0) {
          fprintf(stderr, "http_shop: --port wants 0..65535\n");
          return 2;
        }
        break;
      case 'q':
        if ((opts->queue_max = int_arg(optarg, 1, 1 << 24)) < 0) {
          fprintf(stderr, "http_shop: --queue-max wants 1..16777216\n");
          return 2;
        }
        break;
      case 'D':
        if (strcmp(optarg, "full") == 0) {
          opts->durability = SC_DURABILITY_FULL;
        } else if (strcmp(optarg, "normal") == 0) {
          opts->durability = SC_DURABILITY_NORMAL;
        } else {
          fprintf(stderr, "http_shop: --durability wants full or normal\n");
          return 2;
        }
        break;
      case 'h':
        fputs(usage, stdout);
        return 1;
      default:
        fputs(usage, stderr);
        return 2;
    }
  }
  if (optind != argc) {
    fputs(usage, stderr);
    return 2;
  }
  return 0;
}

static int start(hs_server *srv, const char *addr, int port) {
  int rc = sc_async_open(srv->db, srv->loop, &srv->async);
  if (rc == SC_OK) {
    sc_worker_options wo;
    sc_worker_options_init(&wo);
    wo.on_event = hs_shop_on_event;
    wo.ud = srv;
    rc = sc_worker_start(srv->db, srv->loop, &wo, &srv->worker);
  }
  if (rc != SC_OK) {
    fprintf(stderr, "http_shop: %s: %s\n", sc_err_name(rc), sc_errmsg(srv->db));
    return 1;
  }
  /* The handlers first: once "listening" is printed, a signal must find
   * them. */
  uv_signal_init(srv->loop, &srv->sig_int);
  uv_signal_init(srv->loop, &srv->sig_term);
  srv->sig_int.data = srv->sig_term.data = srv;
  uv_signal_start(&srv->sig_int, on_signal, SIGINT);
  uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
  return listen_on(srv, addr, port) != 0;
}

int main(int argc, char **argv) {
  const char *path = "./shop.db", *addr = "127.0.0.1";
  int port = 8080;
  sc_options opts;
  sc_options_init(&opts);
  int rc = parse_args(argc, argv, &path, &port, &addr, &opts);
  if (rc != 0) return rc == 1 ? 0 : rc;
  signal(SIGPIPE, SIG_IGN);
  hs_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL) return 1;
  srv->loop = uv_default_loop();
  char buf[4096];
  const char *file = db_path(path, buf, sizeof buf);
  if (file == NULL) {
    fprintf(stderr,
            "http_shop: --db %s: a file: URI must name a local file, with no "
            "query\n",
            path);
    free(srv);
    return 2;
  }
  rc = sc_open(file, &opts, &srv->db);
  if (rc != SC_OK) {
    fprintf(stderr, "http_shop: cannot open %s: %s: %s\n", path,
            sc_err_name(rc), sc_errmsg(NULL));
    free(srv);
    return 1;
  }
  int failed = start(srv, addr, port);
  if (failed) {
    /* Closes whatever started, then lets the loop run its close callbacks. */
    srv->stopping = true;
    if (srv->sig_int.loop != NULL) {
      uv_close((uv_handle_t *)&srv->sig_int, NULL);
      uv_close((uv_handle_t *)&srv->sig_term, NULL);
    }
    if (srv->listener.loop != NULL) {
      uv_close((uv_handle_t *)&srv->listener, NULL);
    }
    if (srv->worker != NULL) {
      srv->finishing = true;
      sc_worker_stop(srv->worker, finish_worker_stopped, srv);
    } else if (srv->async != NULL) {
      sc_async_close(srv->async, finish_async_closed, srv);
    }
  }
  uv_run(srv->loop, UV_RUN_DEFAULT);
  rc = sc_close(srv->db);
  if (rc != SC_OK) {
    fprintf(stderr, "http_shop: close: %s: %s\n", sc_err_name(rc),
            sc_errmsg(NULL));
    failed = 1;
  }
  uv_loop_close(srv->loop);
  free(srv);
  if (!failed) fprintf(stderr, "http_shop: stopped\n");
  return failed ? 1 : 0;
}
