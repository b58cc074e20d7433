/* A program built only against the installed libshopcore: its header, its
 * pkg-config file or its CMake package. It opens a database, issues a
 * coupon and verifies. */
#include <shopcore.h>
#include <stdio.h>

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  sc_db *db = NULL;
  if (sc_open(argv[1], NULL, &db) != SC_OK) {
    fprintf(stderr, "open: %s\n", sc_errmsg(NULL));
    return 1;
  }
  sc_coupon_policy_spec spec = {.name = "installed", .max_count = 1};
  sc_id policy = 0, coupon = 0;
  int rc = sc_coupon_policy_create(db, &spec, &policy);
  if (rc == SC_OK) rc = sc_coupon_issue(db, policy, 1, &coupon);
  int sold_out = sc_coupon_issue(db, policy, 2, NULL);
  int verified = sc_verify(db, NULL);
  sc_close(db);
  printf("libshopcore %s: coupon %lld, then %s, verify %s\n", sc_version(),
         (long long)coupon, sc_err_name(sold_out), sc_err_name(verified));
  return rc == SC_OK && coupon > 0 && sold_out == SC_SOLD_OUT &&
                 verified == SC_OK
             ? 0
             : 1;
}
