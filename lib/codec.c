/* Event payloads as msgpack maps. Every map carries the event type ("type")
 * and the schema version ("v") beside its typed fields, so a consumer can
 * never read one event's payload as another's. */
#include <msgpack.h>
#include <string.h>

#include "internal.h"

#define SCHEMA_VERSION 1

/* Which fields each event type carries. */
enum {
  F_USER = 1 << 0,
  F_ORDER = 1 << 1,
  F_POLICY = 1 << 2,
  F_COUPON = 1 << 3,
  F_AMOUNT = 1 << 4,
  F_DISCOUNT = 1 << 5,
  F_EXPIRES = 1 << 6,
};
#define F_ORDER_EVENT (F_USER | F_ORDER | F_COUPON | F_AMOUNT | F_DISCOUNT)

static int fields_of(int type) {
  switch (type) {
    case SC_EVENT_COUPON_ISSUED:
      return F_USER | F_POLICY | F_COUPON;
    case SC_EVENT_ORDER_CREATED:
      return F_ORDER_EVENT | F_EXPIRES;
    case SC_EVENT_ORDER_PAID:
    case SC_EVENT_ORDER_CANCELLED:
    case SC_EVENT_ORDER_EXPIRED:
      return F_ORDER_EVENT;
    case SC_EVENT_DEPOSIT:
      return F_USER | F_AMOUNT;
    case SC_EVENT_POLICY_PAUSED:
    case SC_EVENT_POLICY_RESUMED:
      return F_POLICY;
    default:
      return -1;
  }
}

/* Packs into a fixed buffer: no allocation on the writer's hot path. */
typedef struct fixed_buffer {
  char *data;
  size_t len, cap;
  bool overflow;
} fixed_buffer;

static int fixed_write(void *ud, const char *buf, size_t len) {
  fixed_buffer *b = ud;
  if (b->cap - b->len < len) {
    b->overflow = true;
    return -1;
  }
  memcpy(b->data + b->len, buf, len);
  b->len += len;
  return 0;
}

static void pack_kv(msgpack_packer *pk, const char *key, int64_t value) {
  msgpack_pack_str_with_body(pk, key, strlen(key));
  msgpack_pack_int64(pk, value);
}

size_t sc__event_encode(const sc__event_fields *f, char *buf, size_t cap) {
  int mask = fields_of(f->type);
  if (mask < 0) return 0;
  fixed_buffer b = {buf, 0, cap, false};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &b, fixed_write);
  msgpack_pack_map(&pk, 3 + (size_t)__builtin_popcount((unsigned)mask));
  pack_kv(&pk, "type", f->type);
  pack_kv(&pk, "v", SCHEMA_VERSION);
  pack_kv(&pk, "at", f->at_ms);
  if (mask & F_USER) pack_kv(&pk, "user", f->user);
  if (mask & F_ORDER) pack_kv(&pk, "order", f->order);
  if (mask & F_POLICY) pack_kv(&pk, "policy", f->policy);
  if (mask & F_COUPON) pack_kv(&pk, "coupon", f->coupon);
  if (mask & F_AMOUNT) pack_kv(&pk, "amount", f->amount);
  if (mask & F_DISCOUNT) pack_kv(&pk, "discount", f->discount);
  if (mask & F_EXPIRES) pack_kv(&pk, "expires_at", f->expires_at_ms);
  return b.overflow ? 0 : b.len;
}
