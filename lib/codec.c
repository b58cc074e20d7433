/* Event payloads as msgpack maps. Every map carries the event type ("type")
 * and the schema version ("v") beside its typed fields, so a consumer can
 * never read one event's payload as another's: the decoder checks the
 * version, the type, that each field the type carries is present exactly
 * once with an integer value, and that nothing else is there. */
#include <msgpack.h>
#include <string.h>

#include "internal.h"

/* Which fields each event type carries, besides "type", "v" and "at". */
enum {
  F_USER = 1 << 0,
  F_ORDER = 1 << 1,
  F_POLICY = 1 << 2,
  F_COUPON = 1 << 3,
  F_AMOUNT = 1 << 4,
  F_DISCOUNT = 1 << 5,
  F_EXPIRES = 1 << 6,
  /* Keys every payload has; only the decoder tracks them. */
  F_TYPE = 1 << 7,
  F_VERSION = 1 << 8,
  F_AT = 1 << 9,
};
#define F_ORDER_EVENT (F_USER | F_ORDER | F_COUPON | F_AMOUNT | F_DISCOUNT)
#define F_HEADER (F_TYPE | F_VERSION | F_AT)

static int fields_of(int64_t type) {
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

const char *sc_event_type_name(int type) {
  static const char *const names[] = {
      NULL,         "coupon_issued",   "order_created",
      "order_paid", "order_cancelled", "order_expired",
      "deposit",    "policy_paused",   "policy_resumed"};
  if (type < SC_EVENT_COUPON_ISSUED || type > SC_EVENT_POLICY_RESUMED) {
    return "unknown";
  }
  return names[type];
}

/* ---- encoding ------------------------------------------------------------ */

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
  pack_kv(&pk, "v", SC_EVENT_SCHEMA_VERSION);
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

/* ---- the shape check ----------------------------------------------------- */

/* msgpack-c allocates a container's elements as soon as it reads the
 * container's header: five bytes claiming a 2^32-element array would ask for
 * about 100 GB before the parser notices the data is missing. So the shape
 * is checked first, without allocating: one map of at most MAX_PAIRS pairs
 * whose keys and values are scalars that fit in the buffer. */
#define MAX_PAIRS 16

/* The size of the scalar at p (header and body), or 0 if it is a container
 * or does not fit in the n bytes left. */
static size_t scalar_size(const unsigned char *p, size_t n) {
  static const unsigned char widths[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
  unsigned c = p[0];
  size_t lenw = 0, fixed = 0; /* width of a length field; bytes besides */
  if (c <= 0x7f || c >= 0xe0 || (c >= 0xc0 && c <= 0xc3)) {
    fixed = 0; /* fixint, nil, (reserved), false, true */
  } else if (c >= 0xa0 && c <= 0xbf) {
    fixed = c & 0x1f; /* fixstr */
  } else if (c >= 0xc4 && c <= 0xc6) {
    lenw = (size_t)1 << (c - 0xc4); /* bin 8/16/32 */
  } else if (c >= 0xd9 && c <= 0xdb) {
    lenw = (size_t)1 << (c - 0xd9); /* str 8/16/32 */
  } else if (c >= 0xc7 && c <= 0xc9) {
    lenw = (size_t)1 << (c - 0xc7); /* ext 8/16/32, then a type byte */
    fixed = 1;
  } else if (c >= 0xca && c <= 0xd3) {
    fixed = widths[c - 0xca]; /* float, uint, int */
  } else if (c >= 0xd4 && c <= 0xd8) {
    fixed = 1 + ((size_t)1 << (c - 0xd4)); /* fixext: type, 1..16 bytes */
  } else {
    return 0; /* fixmap, fixarray, array/map 16/32: a container */
  }
  if (lenw >= n) return 0;
  size_t len = 0; /* big-endian, at most 32 bits */
  for (size_t i = 0; i < lenw; i++)
    len = len << 8 | p[1 + i];
  size_t head = 1 + lenw, body = fixed + len;
  return body <= n - head ? head + body : 0;
}

static int check_shape(const unsigned char *p, size_t n) {
  size_t pairs, at;
  if (n >= 1 && p[0] >= 0x80 && p[0] <= 0x8f) {
    pairs = p[0] & 0x0f;
    at = 1;
  } else if (n >= 3 && p[0] == 0xde) {
    pairs = (size_t)p[1] << 8 | p[2];
    at = 3;
  } else {
    return sc__fail(SC_INVALID, "sc_event_decode: the payload is not a map");
  }
  if (pairs > MAX_PAIRS) {
    return sc__fail(SC_INVALID, "sc_event_decode: %zu fields is too many",
                    pairs);
  }
  for (size_t i = 0; i < 2 * pairs; i++) {
    size_t size = at < n ? scalar_size(p + at, n - at) : 0;
    if (size == 0) {
      return sc__fail(
          SC_INVALID,
          "sc_event_decode: %s at byte %zu is truncated, malformed or "
          "nested",
          i % 2 ? "a value" : "a key", at);
    }
    at += size;
  }
  return SC_OK;
}

/* ---- decoding ------------------------------------------------------------ */

/* Where each key's value goes in sc_event_data. */
typedef struct key_slot {
  const char *name;
  int flag;
  size_t offset;
} key_slot;

#define SLOT(name, flag, field) \
  { name, flag, offsetof(sc_event_data, field) }
static const key_slot KEYS[] = {
    SLOT("type", F_TYPE, type),
    SLOT("v", F_VERSION, version),
    SLOT("at", F_AT, at_ms),
    SLOT("user", F_USER, user),
    SLOT("order", F_ORDER, order),
    SLOT("policy", F_POLICY, policy),
    SLOT("coupon", F_COUPON, coupon),
    SLOT("amount", F_AMOUNT, amount),
    SLOT("discount", F_DISCOUNT, discount),
    SLOT("expires_at", F_EXPIRES, expires_at_ms),
};
#undef SLOT

static const key_slot *key_find(const msgpack_object_str *s) {
  for (size_t i = 0; i < sizeof KEYS / sizeof *KEYS; i++) {
    if (strlen(KEYS[i].name) == s->size &&
        memcmp(KEYS[i].name, s->ptr, s->size) == 0) {
      return &KEYS[i];
    }
  }
  return NULL;
}

/* An int64 value: a msgpack integer within int64_t, nothing else (a float,
 * a string or a boolean is the wrong type, never converted). */
static bool int_value(const msgpack_object *o, int64_t *v) {
  if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
    *v = (int64_t)o->via.u64;
    return true;
  }
  if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
    *v = o->via.i64;
    return true;
  }
  return false;
}

static void store(sc_event_data *d, const key_slot *k, int64_t v) {
  char *field = (char *)d + k->offset;
  if (k->flag == F_TYPE || k->flag == F_VERSION) {
    *(int *)field = (int)v;
  } else {
    *(int64_t *)field = v;
  }
}

/* Reads every pair of the map into d; *seen gets the keys found. */
static int read_pairs(const msgpack_object_map *map, sc_event_data *d,
                      int *seen) {
  for (uint32_t i = 0; i < map->size; i++) {
    const msgpack_object *key = &map->ptr[i].key;
    if (key->type != MSGPACK_OBJECT_STR) {
      return sc__fail(SC_INVALID, "sc_event_decode: key %u is not a string",
                      (unsigned)i);
    }
    const key_slot *k = key_find(&key->via.str);
    int len = key->via.str.size > 32 ? 32 : (int)key->via.str.size;
    if (k == NULL) {
      return sc__fail(SC_INVALID, "sc_event_decode: unknown key \"%.*s\"", len,
                      key->via.str.ptr);
    }
    if (*seen & k->flag) {
      return sc__fail(SC_INVALID, "sc_event_decode: key \"%s\" twice", k->name);
    }
    int64_t v;
    if (!int_value(&map->ptr[i].val, &v)) {
      return sc__fail(SC_INVALID,
                      "sc_event_decode: \"%s\" is not an integer (msgpack "
                      "type %d)",
                      k->name, (int)map->ptr[i].val.type);
    }
    if ((k->flag == F_TYPE || k->flag == F_VERSION) &&
        (v < INT32_MIN || v > INT32_MAX)) {
      return sc__fail(SC_INVALID,
                      "sc_event_decode: \"%s\" %lld is out of "
                      "range",
                      k->name, (long long)v);
    }
    store(d, k, v);
    *seen |= k->flag;
  }
  return SC_OK;
}

/* The values a well-formed event can hold: ids of what it is about are > 0
 * (an order's coupon may be 0, none), amounts and times are >= 0. */
static int check_values(const sc_event_data *d) {
  const char *bad = NULL;
  if (d->at_ms < 0) bad = "at";
  if (d->user < 0 || d->order < 0 || d->policy < 0 || d->coupon < 0) {
    bad = "an id";
  }
  if (d->amount < 0) bad = "amount";
  if (d->discount < 0) bad = "discount";
  if (d->expires_at_ms < 0) bad = "expires_at";
  int mask = fields_of(d->type);
  if (((mask & F_USER) && d->user == 0) ||
      ((mask & F_ORDER) && d->order == 0) ||
      ((mask & F_POLICY) && d->policy == 0) ||
      (d->type == SC_EVENT_COUPON_ISSUED && d->coupon == 0)) {
    bad = "an id";
  }
  if (bad != NULL) {
    return sc__fail(SC_INVALID,
                    "sc_event_decode: %s of a %s event is out of "
                    "range",
                    bad, sc_event_type_name(d->type));
  }
  return SC_OK;
}

static int decode_object(const msgpack_object *root, sc_event_data *d) {
  if (root->type != MSGPACK_OBJECT_MAP) {
    return sc__fail(SC_INVALID, "sc_event_decode: the payload is not a map");
  }
  int seen = 0;
  int rc = read_pairs(&root->via.map, d, &seen);
  if (rc != SC_OK) return rc;
  if ((seen & F_HEADER) != F_HEADER) {
    return sc__fail(SC_INVALID,
                    "sc_event_decode: \"type\", \"v\" or \"at\" "
                    "is missing");
  }
  if (d->version != SC_EVENT_SCHEMA_VERSION) {
    return sc__fail(SC_INVALID,
                    "sc_event_decode: schema version %d is not "
                    "%d",
                    d->version, SC_EVENT_SCHEMA_VERSION);
  }
  int mask = fields_of(d->type);
  if (mask < 0) {
    return sc__fail(SC_INVALID, "sc_event_decode: unknown event type %d",
                    d->type);
  }
  if ((seen & ~F_HEADER) != mask) {
    return sc__fail(SC_INVALID,
                    "sc_event_decode: the fields of a %s event "
                    "are wrong (missing or foreign keys)",
                    sc_event_type_name(d->type));
  }
  return check_values(d);
}

int sc_event_decode_sized(const void *payload, size_t len, sc_event_data *out,
                          size_t size) {
  if (out == NULL) return sc__fail(SC_MISUSE, "sc_event_decode: out is NULL");
  if (payload == NULL && len > 0) {
    return sc__fail(SC_MISUSE, "sc_event_decode: payload is NULL");
  }
  if (len == 0 || len > SC_EVENT_PAYLOAD_MAX) {
    return sc__fail(SC_INVALID,
                    "sc_event_decode: a payload of %zu bytes "
                    "(1..%d expected)",
                    len, SC_EVENT_PAYLOAD_MAX);
  }
  int rc = check_shape(payload, len);
  if (rc != SC_OK) return rc;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  msgpack_unpack_return ur = msgpack_unpack_next(&u, payload, len, &off);
  sc_event_data d = {0};
  if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
    rc = sc__fail(SC_NOMEM, "sc_event_decode: out of memory");
  } else if (ur != MSGPACK_UNPACK_SUCCESS) {
    rc = sc__fail(SC_INVALID, "sc_event_decode: malformed msgpack (%s)",
                  ur == MSGPACK_UNPACK_CONTINUE ? "truncated" : "parse error");
  } else if (off != len) {
    rc = sc__fail(SC_INVALID, "sc_event_decode: %zu trailing bytes", len - off);
  } else {
    rc = decode_object(&u.data, &d);
  }
  msgpack_unpacked_destroy(&u);
  if (rc == SC_OK) sc__struct_out(out, size, &d, sizeof d);
  return rc;
}

int(sc_event_decode)(const void *payload, size_t len, sc_event_data *out) {
  return sc_event_decode_sized(payload, len, out, sizeof *out);
}
