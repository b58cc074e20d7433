/* The event codec: every event type round-trips; truncated, bit-flipped,
 * type-swapped, mislabelled and oversized payloads are refused with
 * SC_INVALID and leave the output untouched. */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test_util.h"

/* One event of each type, with distinct values in every field it carries. */
static sc__event_fields sample(int type) {
  return (sc__event_fields){
      .type = type,
      .user = 1000 + type,
      .order = 2000000 + type,
      .policy = 3 + type,
      .coupon = type == SC_EVENT_ORDER_PAID ? 0 : 400 + type,
      .amount = 9000000000LL + type,
      .discount = 250 + type,
      .expires_at_ms = 1700000900000LL + type,
      .at_ms = 1700000000000LL + type};
}

static size_t encode(const sc__event_fields *f, char *buf) {
  size_t n = sc__event_encode(f, buf, SC__PAYLOAD_MAX);
  ck_assert_uint_gt(n, 0);
  return n;
}

/* A sentinel that must survive every refused decode. */
static sc_event_data sentinel(void) {
  sc_event_data d;
  memset(&d, 0x5a, sizeof d);
  return d;
}

static void assert_refused(const void *buf, size_t len, const char *why) {
  sc_event_data d = sentinel(), s = sentinel();
  int rc = sc_event_decode(buf, len, &d);
  ck_assert_msg(rc == SC_INVALID, "%s: got %s, want SC_INVALID", why,
                sc_err_name(rc));
  ck_assert_msg(memcmp(&d, &s, sizeof d) == 0, "%s: out was written", why);
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "sc_event_decode"));
}

START_TEST(every_type_round_trips) {
  for (int type = SC_EVENT_COUPON_ISSUED; type <= SC_EVENT_POLICY_RESUMED;
       type++) {
    sc__event_fields f = sample(type);
    char buf[SC__PAYLOAD_MAX];
    size_t n = encode(&f, buf);
    sc_event_data d = sentinel();
    ck_assert_sc(sc_event_decode(buf, n, &d), SC_OK);
    ck_assert_int_eq(d.type, type);
    ck_assert_int_eq(d.version, SC_EVENT_SCHEMA_VERSION);
    ck_assert_int_eq(d.at_ms, f.at_ms);
    bool order_event =
        type >= SC_EVENT_ORDER_CREATED && type <= SC_EVENT_ORDER_EXPIRED;
    bool policy_event =
        type == SC_EVENT_POLICY_PAUSED || type == SC_EVENT_POLICY_RESUMED;
    /* Each type carries its fields; the others read 0. */
    ck_assert_int_eq(d.user, policy_event ? 0 : f.user);
    ck_assert_int_eq(d.order, order_event ? f.order : 0);
    ck_assert_int_eq(d.policy, type == SC_EVENT_COUPON_ISSUED || policy_event
                                   ? f.policy
                                   : 0);
    ck_assert_int_eq(
        d.coupon, type == SC_EVENT_COUPON_ISSUED || order_event ? f.coupon : 0);
    ck_assert_int_eq(d.amount,
                     order_event || type == SC_EVENT_DEPOSIT ? f.amount : 0);
    ck_assert_int_eq(d.discount, order_event ? f.discount : 0);
    ck_assert_int_eq(d.expires_at_ms,
                     type == SC_EVENT_ORDER_CREATED ? f.expires_at_ms : 0);
    ck_assert_str_ne(sc_event_type_name(type), "unknown");
  }
  ck_assert_str_eq(sc_event_type_name(SC_EVENT_ORDER_PAID), "order_paid");
  ck_assert_str_eq(sc_event_type_name(0), "unknown");
  ck_assert_str_eq(sc_event_type_name(99), "unknown");
}
END_TEST

START_TEST(encoder_refuses_unknown_types_and_small_buffers) {
  sc__event_fields f = sample(SC_EVENT_ORDER_CREATED);
  char buf[SC__PAYLOAD_MAX];
  size_t n = encode(&f, buf);
  ck_assert_uint_eq(sc__event_encode(&f, buf, n - 1), 0);
  ck_assert_uint_eq(sc__event_encode(&f, buf, n), n);
  f.type = 42;
  ck_assert_uint_eq(sc__event_encode(&f, buf, sizeof buf), 0);
}
END_TEST

START_TEST(every_truncation_is_refused) {
  for (int type = SC_EVENT_COUPON_ISSUED; type <= SC_EVENT_POLICY_RESUMED;
       type++) {
    sc__event_fields f = sample(type);
    char buf[SC__PAYLOAD_MAX];
    size_t n = encode(&f, buf);
    for (size_t len = 0; len < n; len++) {
      /* A copy of exactly len bytes, so ASan sees any read past it. */
      char *cut = malloc(len ? len : 1);
      ck_assert_ptr_nonnull(cut);
      memcpy(cut, buf, len);
      assert_refused(cut, len, "truncated");
      free(cut);
    }
  }
}
END_TEST

/* Where the key strings are, so flips inside them can be told apart. */
static bool in_key(const char *buf, size_t n, size_t at) {
  static const char *const keys[] = {
      "type",   "v",      "at",     "user",     "order",
      "policy", "coupon", "amount", "discount", "expires_at"};
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
    size_t kl = strlen(keys[k]);
    for (size_t i = 1; i + kl <= n; i++) {
      /* a fixstr header followed by the key's bytes */
      if ((unsigned char)buf[i - 1] == (0xa0 | kl) &&
          memcmp(buf + i, keys[k], kl) == 0 && at >= i - 1 && at < i + kl) {
        return true;
      }
    }
  }
  return false;
}

START_TEST(every_bit_flip_is_refused_or_read_faithfully) {
  int refused = 0, accepted = 0;
  for (int type = SC_EVENT_COUPON_ISSUED; type <= SC_EVENT_POLICY_RESUMED;
       type++) {
    sc__event_fields f = sample(type);
    char buf[SC__PAYLOAD_MAX];
    size_t n = encode(&f, buf);
    for (size_t at = 0; at < n; at++) {
      for (int bit = 0; bit < 8; bit++) {
        char *flipped = malloc(n);
        ck_assert_ptr_nonnull(flipped);
        memcpy(flipped, buf, n);
        flipped[at] ^= (char)(1 << bit);
        sc_event_data d = sentinel();
        int rc = sc_event_decode(flipped, n, &d);
        ck_assert_msg(rc == SC_OK || rc == SC_INVALID, "flip %zu.%d: %s", at,
                      bit, sc_err_name(rc));
        if (at == 0 || in_key(buf, n, at)) {
          /* The map header and the key names are structure: always caught. */
          ck_assert_msg(rc == SC_INVALID, "type %d flip %zu.%d accepted", type,
                        at, bit);
        }
        if (rc == SC_OK) {
          /* A flip inside a value can make another valid event (there is no
           * checksum); it is then read as exactly what the bytes say. */
          accepted++;
          ck_assert_int_eq(d.version, SC_EVENT_SCHEMA_VERSION);
          ck_assert_str_ne(sc_event_type_name(d.type), "unknown");
          char again[SC__PAYLOAD_MAX];
          sc__event_fields g = {d.type,     d.user,          d.order,
                                d.policy,   d.coupon,        d.amount,
                                d.discount, d.expires_at_ms, d.at_ms};
          size_t m = sc__event_encode(&g, again, sizeof again);
          sc_event_data d2;
          ck_assert_sc(sc_event_decode(again, m, &d2), SC_OK);
          ck_assert_mem_eq(&d, &d2, sizeof d);
        } else {
          refused++;
        }
        free(flipped);
      }
    }
  }
  ck_assert_int_gt(refused, accepted);
}
END_TEST

/* ---- hand-built payloads ------------------------------------------------- */

typedef struct mp {
  msgpack_sbuffer sb;
  msgpack_packer pk;
} mp;

static void mp_init(mp *m, size_t pairs) {
  msgpack_sbuffer_init(&m->sb);
  msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
  msgpack_pack_map(&m->pk, pairs);
}

static void mp_key(mp *m, const char *k) {
  msgpack_pack_str_with_body(&m->pk, k, strlen(k));
}

static void mp_int(mp *m, const char *k, int64_t v) {
  mp_key(m, k);
  msgpack_pack_int64(&m->pk, v);
}

/* A deposit event with one field's value written by put. */
typedef void (*put_fn)(mp *m);
static void deposit_with(mp *m, const char *odd_key, put_fn put) {
  mp_init(m, 5);
  const char *keys[] = {"type", "v", "at", "user", "amount"};
  int64_t vals[] = {SC_EVENT_DEPOSIT, SC_EVENT_SCHEMA_VERSION, 5, 7, 100};
  for (int i = 0; i < 5; i++) {
    if (strcmp(keys[i], odd_key) == 0) {
      mp_key(m, keys[i]);
      put(m);
    } else {
      mp_int(m, keys[i], vals[i]);
    }
  }
}

static void put_float(mp *m) {
  msgpack_pack_double(&m->pk, 7.0);
}
static void put_string(mp *m) {
  msgpack_pack_str_with_body(&m->pk, "7", 1);
}
static void put_true(mp *m) {
  msgpack_pack_true(&m->pk);
}
static void put_nil(mp *m) {
  msgpack_pack_nil(&m->pk);
}
static void put_bin(mp *m) {
  msgpack_pack_bin_with_body(&m->pk, "\7", 1);
}
static void put_array(mp *m) {
  msgpack_pack_array(&m->pk, 1);
  msgpack_pack_int(&m->pk, 7);
}
static void put_map(mp *m) {
  msgpack_pack_map(&m->pk, 0);
}
static void put_huge(mp *m) {
  msgpack_pack_uint64(&m->pk, UINT64_MAX);
}
static void put_negative(mp *m) {
  msgpack_pack_int64(&m->pk, -7);
}
static void put_ext(mp *m) {
  msgpack_pack_ext_with_body(&m->pk, "\7", 1, 3);
}
static void put_deposit_type(mp *m) {
  msgpack_pack_int(&m->pk, 6);
}
static void put_coupon_type(mp *m) {
  msgpack_pack_int(&m->pk, SC_EVENT_COUPON_ISSUED);
}
static void put_type_name(mp *m) {
  msgpack_pack_str_with_body(&m->pk, "deposit", 7);
}
static void put_version_2(mp *m) {
  msgpack_pack_int(&m->pk, 2);
}
static void put_version_0(mp *m) {
  msgpack_pack_int(&m->pk, 0);
}
static void put_type_99(mp *m) {
  msgpack_pack_int(&m->pk, 99);
}
static void put_type_big(mp *m) {
  msgpack_pack_int64(&m->pk, ((int64_t)1 << 32) + SC_EVENT_DEPOSIT);
}

START_TEST(wrong_value_types_are_refused) {
  struct {
    const char *key;
    put_fn put;
    const char *why;
  } cases[] = {
      {"user", put_float, "float id"},
      {"user", put_string, "string id"},
      {"amount", put_true, "boolean amount"},
      {"amount", put_nil, "nil amount"},
      {"amount", put_bin, "bin amount"},
      {"user", put_array, "array id"},
      {"user", put_map, "map id"},
      {"user", put_ext, "ext id"},
      {"user", put_huge, "uint64 beyond int64"},
      {"user", put_negative, "negative id"},
      {"amount", put_negative, "negative amount"},
      {"type", put_type_name, "type as a string"},
      {"type", put_coupon_type, "deposit fields under another type"},
      {"type", put_type_99, "unknown type"},
      {"type", put_type_big, "type beyond int"},
      {"v", put_version_2, "newer schema version"},
      {"v", put_version_0, "schema version 0"},
      {"at", put_float, "float time"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    mp m;
    deposit_with(&m, cases[i].key, cases[i].put);
    assert_refused(m.sb.data, m.sb.size, cases[i].why);
    msgpack_sbuffer_destroy(&m.sb);
  }
  /* The control: the same builder with the right value is accepted. */
  mp m;
  deposit_with(&m, "type", put_deposit_type);
  sc_event_data d;
  ck_assert_sc(sc_event_decode(m.sb.data, m.sb.size, &d), SC_OK);
  ck_assert_int_eq(d.type, SC_EVENT_DEPOSIT);
  ck_assert_int_eq(d.user, 7);
  ck_assert_int_eq(d.amount, 100);
  msgpack_sbuffer_destroy(&m.sb);
}
END_TEST

/* The seed's cache incident: one event's bytes read as another type. Every
 * payload is refused under every other type label whose fields differ. */
START_TEST(a_payload_cannot_pass_as_another_type) {
  for (int from = SC_EVENT_COUPON_ISSUED; from <= SC_EVENT_POLICY_RESUMED;
       from++) {
    for (int as = SC_EVENT_COUPON_ISSUED; as <= SC_EVENT_POLICY_RESUMED; as++) {
      sc__event_fields f = sample(from);
      char buf[SC__PAYLOAD_MAX];
      size_t n = encode(&f, buf);
      /* "type" is the first pair: a positive fixint right after its key. */
      ck_assert_int_eq((unsigned char)buf[6], from);
      buf[6] = (char)as;
      sc_event_data d = sentinel();
      int rc = sc_event_decode(buf, n, &d);
      bool same_shape =
          from == as ||
          (from >= SC_EVENT_ORDER_PAID && from <= SC_EVENT_ORDER_EXPIRED &&
           as >= SC_EVENT_ORDER_PAID && as <= SC_EVENT_ORDER_EXPIRED) ||
          (from >= SC_EVENT_POLICY_PAUSED && as >= SC_EVENT_POLICY_PAUSED);
      ck_assert_msg(rc == (same_shape ? SC_OK : SC_INVALID),
                    "%s read as %s: %s", sc_event_type_name(from),
                    sc_event_type_name(as), sc_err_name(rc));
      if (rc == SC_OK) ck_assert_int_eq(d.type, as);
    }
  }
}
END_TEST

START_TEST(map_structure_is_checked) {
  mp m;
  /* A missing field. */
  mp_init(&m, 4);
  mp_int(&m, "type", SC_EVENT_DEPOSIT);
  mp_int(&m, "v", 1);
  mp_int(&m, "at", 5);
  mp_int(&m, "user", 7);
  assert_refused(m.sb.data, m.sb.size, "missing amount");
  msgpack_sbuffer_destroy(&m.sb);
  /* A foreign field. */
  mp_init(&m, 6);
  mp_int(&m, "type", SC_EVENT_DEPOSIT);
  mp_int(&m, "v", 1);
  mp_int(&m, "at", 5);
  mp_int(&m, "user", 7);
  mp_int(&m, "amount", 100);
  mp_int(&m, "order", 3);
  assert_refused(m.sb.data, m.sb.size, "foreign order field");
  msgpack_sbuffer_destroy(&m.sb);
  /* A key twice (the map still has five pairs). */
  mp_init(&m, 5);
  mp_int(&m, "type", SC_EVENT_DEPOSIT);
  mp_int(&m, "v", 1);
  mp_int(&m, "at", 5);
  mp_int(&m, "user", 7);
  mp_int(&m, "user", 8);
  assert_refused(m.sb.data, m.sb.size, "duplicate key");
  msgpack_sbuffer_destroy(&m.sb);
  /* An unknown key, and a key that is not a string. */
  mp_init(&m, 5);
  mp_int(&m, "type", SC_EVENT_DEPOSIT);
  mp_int(&m, "v", 1);
  mp_int(&m, "at", 5);
  mp_int(&m, "user", 7);
  mp_int(&m, "amount_", 100);
  assert_refused(m.sb.data, m.sb.size, "unknown key");
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "amount_"));
  msgpack_sbuffer_destroy(&m.sb);
  mp_init(&m, 1);
  msgpack_pack_int(&m.pk, 1);
  msgpack_pack_int(&m.pk, 6);
  assert_refused(m.sb.data, m.sb.size, "integer key");
  msgpack_sbuffer_destroy(&m.sb);
  /* Not a map at all. */
  msgpack_sbuffer_init(&m.sb);
  msgpack_packer_init(&m.pk, &m.sb, msgpack_sbuffer_write);
  msgpack_pack_array(&m.pk, 2);
  msgpack_pack_int(&m.pk, 6);
  msgpack_pack_int(&m.pk, 1);
  assert_refused(m.sb.data, m.sb.size, "array payload");
  msgpack_sbuffer_destroy(&m.sb);
  assert_refused("\x06", 1, "a bare integer");
  assert_refused("\xc1", 1, "a reserved byte");
}
END_TEST

START_TEST(framing_is_checked) {
  sc__event_fields f = sample(SC_EVENT_COUPON_ISSUED);
  char buf[SC__PAYLOAD_MAX + 1];
  size_t n = encode(&f, buf);
  buf[n] = (char)0xc0; /* one trailing nil */
  assert_refused(buf, n + 1, "trailing byte");
  ck_assert_ptr_nonnull(strstr(sc_errmsg(NULL), "trailing"));
  assert_refused(buf, 0, "empty");
  char big[SC_EVENT_PAYLOAD_MAX + 1];
  memset(big, 0, sizeof big);
  memcpy(big, buf, n);
  assert_refused(big, sizeof big, "oversized");
  /* The same map with a map16 header is the same event. */
  char wide[SC__PAYLOAD_MAX + 2];
  wide[0] = (char)0xde;
  wide[1] = 0;
  wide[2] = (char)(buf[0] & 0x0f);
  memcpy(wide + 3, buf + 1, n - 1);
  sc_event_data d;
  ck_assert_sc(sc_event_decode(wide, n + 2, &d), SC_OK);
  ck_assert_int_eq(d.coupon, f.coupon);
  sc_event_data s = sentinel();
  d = s;
  ck_assert_sc(sc_event_decode(buf, n, NULL), SC_MISUSE);
  ck_assert_sc(sc_event_decode(NULL, 4, &d), SC_MISUSE);
  ck_assert_sc(sc_event_decode(NULL, 0, &d), SC_INVALID);
  ck_assert_mem_eq(&d, &s, sizeof d);
}
END_TEST

/* Container headers claiming billions of elements in a few bytes: refused
 * before msgpack-c would allocate for them. */
START_TEST(huge_container_headers_are_refused_cheaply) {
  static const struct {
    const char *bytes;
    size_t len;
  } cases[] = {
      {"\xdd\xff\xff\xff\xff", 5},                  /* array32 at the top */
      {"\xdf\xff\xff\xff\xff", 5},                  /* map32 at the top */
      {"\xde\xff\xff", 3},                          /* map16 of 65535 pairs */
      {"\x81\xa4user\xdd\xff\xff\xff\xff", 11},     /* nested array32 */
      {"\x81\xa4user\xdf\x0f\xff\xff\xff", 11},     /* nested map32 */
      {"\x81\xa4user\xdb\xff\xff\xff\xff", 11},     /* str32 past the end */
      {"\x81\xa4user\xc6\x7f\xff\xff\xff", 11},     /* bin32 past the end */
      {"\x81\xa4user\xc9\x7f\xff\xff\xff\x01", 12}, /* ext32 past the end */
      {"\x81\xda\xff\xff", 4}, /* a str16 key past the end */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *copy = malloc(cases[i].len);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, cases[i].bytes, cases[i].len);
    assert_refused(copy, cases[i].len, "huge container");
    free(copy);
  }
}
END_TEST

Suite *codec_suite(void) {
  Suite *s = suite_create("codec");
  TCase *tc = tu_tcase("codec");
  tcase_add_test(tc, every_type_round_trips);
  tcase_add_test(tc, encoder_refuses_unknown_types_and_small_buffers);
  tcase_add_test(tc, every_truncation_is_refused);
  tcase_add_test(tc, every_bit_flip_is_refused_or_read_faithfully);
  tcase_add_test(tc, wrong_value_types_are_refused);
  tcase_add_test(tc, a_payload_cannot_pass_as_another_type);
  tcase_add_test(tc, map_structure_is_checked);
  tcase_add_test(tc, framing_is_checked);
  tcase_add_test(tc, huge_container_headers_are_refused_cheaply);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return tu_run_suite(codec_suite());
}
