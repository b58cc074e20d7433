/* libshopcore version. CMake parses the three numbers below; keep their form.
 */
#ifndef SHOPCORE_VERSION_H
#define SHOPCORE_VERSION_H

#define SC_VERSION_MAJOR 0
#define SC_VERSION_MINOR 1
#define SC_VERSION_PATCH 0

#define SC_VERSION_HEX \
  ((SC_VERSION_MAJOR << 16) | (SC_VERSION_MINOR << 8) | (SC_VERSION_PATCH))

#define SC__STRINGIFY(v) #v
#define SC__VERSION_STRING(a, b, c) \
  SC__STRINGIFY(a) "." SC__STRINGIFY(b) "." SC__STRINGIFY(c)
#define SC_VERSION_STRING \
  SC__VERSION_STRING(SC_VERSION_MAJOR, SC_VERSION_MINOR, SC_VERSION_PATCH)

#endif /* SHOPCORE_VERSION_H */
