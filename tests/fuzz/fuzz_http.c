/* http_shop's request path without a socket or a database: the input is
 * bytes from a client, fed to the reader in two pieces (the first byte says
 * where to cut, as a read may end anywhere); every complete request is
 * routed and validated (JSON included) and answered as the server would,
 * until the input runs out or is refused. Nothing may crash, read out of
 * bounds, overflow or leak. */
#include <stdlib.h>
#include <string.h>

#include "http.h"

static void answer(int status, const char *error, const char *message) {
  char *body = hs_error_json(error, message);
  size_t len = 0;
  char *out = hs_response(status, "application/json", body ? body : "",
                          body ? strlen(body) : 0, status < 400, "", &len);
  if (out != NULL && len < strlen(hs_reason(status))) abort();
  free(out);
  free(body);
}

/* Feeds data as the server does: one request at a time, answered before the
 * reader goes on. Returns false once the reader refused the input. */
static int feed(hs_reader *r, const char *data, size_t len) {
  while (len > 0) {
    size_t used = hs_reader_feed(r, data, len);
    if (used > len) abort();
    data += used;
    len -= used;
    if (r->state == HS_BAD) {
      answer(r->bad_status, "bad_request", r->bad_reason);
      return 0;
    }
    if (r->state != HS_REQUEST) return 1;
    hs_call call;
    hs_refusal why;
    if (hs_route_request(r, &call, &why) != 0) {
      if (why.status < 400 || why.status > 500) abort(); /* 500: no memory */
      answer(why.status, why.error, why.message);
    } else {
      if (call.route == HS_CHECKOUT && (call.n_lines == 0 || call.user <= 0)) {
        abort(); /* a checkout that passed has lines and a user */
      }
      answer(200, "ok", hs_route_name(call.route));
    }
    hs_call_free(&call);
    hs_reader_next(r);
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  if (size == 0) return 0;
  size_t cut = data[0] % size;
  const char *in = (const char *)data + 1;
  size--;
  if (cut > size) cut = size;
  hs_reader r;
  hs_reader_init(&r);
  if (feed(&r, in, cut)) feed(&r, in + cut, size - cut);
  hs_reader_free(&r);
  return 0;
}
