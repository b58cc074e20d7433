/* libFuzzer target for sc_event_decode: no input may crash it, read out of
 * bounds (ASan), hit undefined behaviour (UBSan) or allocate without bound;
 * every status is SC_OK or SC_INVALID; and whatever it accepts re-encodes
 * to a payload that decodes to the same event (it read the bytes
 * faithfully). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sc_event_data d;
  int rc = sc_event_decode(data, size, &d);
  if (rc == SC_INVALID) return 0;
  if (rc != SC_OK) abort();
  sc__event_fields f = {d.type,     d.user,          d.order,
                        d.policy,   d.coupon,        d.amount,
                        d.discount, d.expires_at_ms, d.at_ms};
  char buf[SC__PAYLOAD_MAX];
  size_t n = sc__event_encode(&f, buf, sizeof buf);
  sc_event_data again;
  if (n == 0 || sc_event_decode(buf, n, &again) != SC_OK ||
      memcmp(&d, &again, sizeof d) != 0) {
    abort();
  }
  return 0;
}
