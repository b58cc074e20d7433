#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds a consumer against
# it twice, through the CMake package and through pkg-config, and runs both.
# Usage: check_install.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/shopcore.h include/shopcore/version.h; do
  [[ -f $prefix/$f ]] || { echo "not installed: $f"; exit 1; }
done
libdir=$(find "$prefix" -name 'libshopcore.so.*' -printf '%h\n' | head -1)
[[ -n $libdir ]] || { echo "no shared library installed"; exit 1; }
# The SONAME carries the major version only.
soname=$(objdump -p "$libdir"/libshopcore.so | awk '/SONAME/ {print $2}')
[[ $soname == libshopcore.so.0 ]] || { echo "SONAME is $soname"; exit 1; }
# Only sc_ names are exported.
leaked=$(nm -D --defined-only "$libdir"/libshopcore.so | awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^sc_' || true)
[[ -z $leaked ]] || { echo "exported non-API symbols: $leaked"; exit 1; }
if nm -D --defined-only "$libdir"/libshopcore.so | awk '{print $3}' | grep -q '^sc__'; then
  echo "internal sc__ symbols are exported"
  exit 1
fi

echo "-- CMake package"
cmake -S "$src/tests/install" -B "$work/cmake" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH=$libdir "$work/cmake/consumer_cmake" "$work/a.db"

echo "-- pkg-config"
export PKG_CONFIG_PATH=$libdir/pkgconfig
cc -std=c11 -o "$work/consumer_pc" "$src/tests/install/consumer.c" \
  $(pkg-config --cflags --libs shopcore)
LD_LIBRARY_PATH=$libdir "$work/consumer_pc" "$work/b.db"
echo "install check passed"
