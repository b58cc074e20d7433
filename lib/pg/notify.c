/* The wake-up of workers on other hosts: a batch that may have written
 * events (or a new expiry deadline) sends pg_notify on the schema's channel
 * as one more call of its pipeline, inside its transaction, so that it is
 * delivered only if the batch commits. A worker listens on the channel
 * (uv/listen.c) and claims at once instead of at its next poll.
 *
 * NOTIFY takes a database-wide lock from its commit until the commit ends,
 * which serialises the notifying commits of every host; so a handle
 * notifies at most once per NOTIFY_GAP_MS (and once more in that time for a
 * checkout, whose deadline listeners must learn). A listener runs one more
 * round a little after a notification (uv/listen.c), which finds the events
 * (and deadlines) of the batches this gap kept quiet; one committed later
 * than that waits for the listener's poll. The gap is measured on the monotonic
 * clock: it is about real load, and an injected clock that stands still must
 * not silence the channel. */
#include <string.h>

#include "pg.h"

#define NOTIFY_GAP_MS 5
#define QUIET_AFTER_FAILURE_MS 1000

const char sc__pg_notify_name[] = "sc_notify";
const char sc__pg_notify_sql[] = "SELECT pg_notify($1, $2)";

/* The operations that can write an event, or make dead ones pending again
 * (a requeue): what a worker elsewhere wants to hear of. Claims, settles,
 * purges and creations write none. Expiry is left out: every idle worker
 * runs a round per poll that mostly expires nothing, and notifying for each
 * would wake every host (and take NOTIFY's database-wide lock) for nothing;
 * the worker that expired an order claims its event itself, and the others'
 * polls find it. */
static const sc__op_pg *const WRITES_EVENTS[] = {
    &sc__pg_policy_pause, &sc__pg_coupon_issue, &sc__pg_deposit,
    &sc__pg_checkout,     &sc__pg_order_pay,    &sc__pg_order_cancel,
    &sc__pg_requeue_all,
};

void sc__pg_channel(const char *schema, char channel[64]) {
  /* A channel name has at most 63 bytes, as a schema's: a long schema is
   * cut, and two such schemas share a channel (a wake-up too many, no
   * more). */
  snprintf(channel, 64, "sc_events_%s", schema);
}

static bool writes_events(const sc__op *op) {
  for (size_t i = 0; i < sizeof WRITES_EVENTS / sizeof *WRITES_EVENTS; i++) {
    if (op->pg == WRITES_EVENTS[i]) return true;
  }
  return false;
}

const char *sc__pg_notify_payload(sc_db *db, sc__op *const *ops, int n) {
  bool events = false, deadline = false;
  for (int i = 0; i < n; i++) {
    if (ops[i]->excluded || !writes_events(ops[i])) continue;
    events = true;
    deadline = deadline || ops[i]->pg == &sc__pg_checkout;
  }
  if (!events) return NULL;
  int64_t now = sc__monotonic_ns();
  if (now < db->pg->quiet_until_ns) return NULL;
  /* A new deadline is not kept quiet by a notification that carried none:
   * listeners would run a dispatch round but no expiry round. */
  int64_t last = deadline ? db->pg->notified_d_ns : db->pg->notified_ns;
  if (last != 0 && now - last < NOTIFY_GAP_MS * 1000000LL) {
    return NULL;
  }
  return deadline ? "d" : "";
}

void sc__pg_notified(sc_db *db, const char *payload) {
  db->pg->notified_ns = sc__monotonic_ns();
  if (payload[0] == 'd') db->pg->notified_d_ns = db->pg->notified_ns;
}

void sc__pg_notify_failed(sc_db *db) {
  db->pg->quiet_until_ns =
      sc__monotonic_ns() + QUIET_AFTER_FAILURE_MS * 1000000LL;
}
