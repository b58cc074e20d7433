/* Internal declarations shared by the modules of lib/, one header per
 * layer (lib/README.md tells the way of a call through them). Nothing here
 * is API. */
#ifndef SC_INTERNAL_H
#define SC_INTERNAL_H

#include "base.h"
#include "sqlite/conn.h"
#include "writer.h"
#include "shop.h"
#include "outbox.h"

#endif /* SC_INTERNAL_H */
