#!/usr/bin/env bash
# A fresh clone's first steps, end to end: builds from scratch as
# scripts/run.sh does (scripts/build.sh, into a temporary directory), runs
# `cmake --install BUILD --prefix P`, checks that P holds everything, then
# uses the install as a user would:
#   - C through the CMake package, with only libuv's .pc file visible (the
#     shared target must not need sqlite3.pc or msgpack.pc);
#   - C through pkg-config, and the README's C tour;
#   - the Python package, imported from P by the interpreter it was built
#     for, and the README's Python tour;
#   - the installed shopcore program.
# Before that, the build tree: configured but not built it has no empty
# bindings/python/shopcore/ (which would import as an empty namespace
# package), and built it runs the README's build-tree Python command.
# Usage: check_install.sh SOURCE_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
work=$(mktemp -d "${SC_TEST_TMPDIR:-${TMPDIR:-/tmp}}/install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

echo "-- configured, not built: no empty package directory to import"
cmake -S "$src" -B "$work/build" -G Ninja >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log"; fail "the configure step failed"; }
[[ ! -e $work/build/bindings/python/shopcore ]] ||
  fail "build/bindings/python/shopcore exists before the bindings are built"

echo "-- fresh build (scripts/build.sh, as scripts/run.sh does)"
"$src/scripts/build.sh" "$work/build" >>"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log"; fail "the build failed"; }
# The README's build-tree command.
out=$(cd "$work" && PYTHONPATH=build/bindings/python PYTHONDONTWRITEBYTECODE=1 \
  python3 "$src/examples/python/flash_sale.py" 8 tree.db) ||
  fail "the README's build-tree Python command failed"
[[ $out == *"1000 coupons issued"*"verify: ok"* ]] ||
  fail "the README's build-tree Python command printed: $out"

echo "-- cmake --install --prefix"
prefix=$work/prefix
cmake --install "$work/build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install failed"; }
libdir=$(find "$prefix" -name 'libshopcore.so.*' -printf '%h\n' | head -1)
[[ -n $libdir ]] || fail "no shared library installed"
for f in include/shopcore.h include/shopcore/version.h bin/shopcore \
  "${libdir#"$prefix"/}"/libshopcore.a \
  "${libdir#"$prefix"/}"/pkgconfig/shopcore.pc \
  "${libdir#"$prefix"/}"/cmake/shopcore/shopcoreConfig.cmake \
  "${libdir#"$prefix"/}"/cmake/shopcore/shopcoreTargets.cmake \
  "${libdir#"$prefix"/}"/cmake/shopcore/shopcoreStaticTargets.cmake; do
  [[ -e $prefix/$f ]] || fail "not installed: $f"
done
# The SONAME carries the major version only.
soname=$(objdump -p "$libdir"/libshopcore.so | awk '/SONAME/ {print $2}')
[[ $soname == libshopcore.so.0 ]] || fail "SONAME is $soname"
# Only sc_ names are exported, and no internal sc__ ones.
leaked=$(nm -D --defined-only "$libdir"/libshopcore.so |
  awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^sc_' || true)
[[ -z $leaked ]] || fail "exported non-API symbols: $leaked"
if nm -D --defined-only "$libdir"/libshopcore.so | awk '{print $3}' |
  grep -q '^sc__'; then
  fail "internal sc__ symbols are exported"
fi

echo "-- CMake package, with only libuv.pc on the pkg-config path"
pcdir=$work/only-libuv-pc
mkdir -p "$pcdir"
cp "$(pkg-config --variable=pcfiledir libuv)/libuv.pc" "$pcdir/"
PKG_CONFIG_LIBDIR=$pcdir PKG_CONFIG_PATH='' \
  cmake -S "$src/tests/install" -B "$work/cmake" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" >"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "find_package(shopcore) failed"; }
cmake --build "$work/cmake" >>"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; fail "the CMake consumer did not build"; }
LD_LIBRARY_PATH=$libdir "$work/cmake/consumer_cmake" "$work/a.db"

echo "-- CMake package, the static target (sqlite3.pc and msgpack.pc found)"
cmake -S "$src/tests/install" -B "$work/cmake-static" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" -DSC_CONSUMER_STATIC=ON >"$work/static.log" 2>&1 ||
  { cat "$work/static.log"; fail "find_package(shopcore COMPONENTS static) failed"; }
cmake --build "$work/cmake-static" >>"$work/static.log" 2>&1 ||
  { cat "$work/static.log"; fail "the static consumer did not build"; }
ldd "$work/cmake-static/consumer_cmake" | grep -q libshopcore &&
  fail "the static consumer links libshopcore.so"
"$work/cmake-static/consumer_cmake" "$work/s.db"

echo "-- pkg-config (with an rpath, as the README shows)"
export PKG_CONFIG_PATH=$libdir/pkgconfig
# shellcheck disable=SC2046 # pkg-config's flags are meant to be split
cc -std=c11 -o "$work/consumer_pc" "$src/tests/install/consumer.c" \
  $(pkg-config --cflags --libs shopcore) \
  -Wl,-rpath,"$(pkg-config --variable=libdir shopcore)"
"$work/consumer_pc" "$work/b.db"

echo "-- the README's C tour, built against the install"
awk '/^```c$/ {f = 1; next} /^```$/ {if (f) exit} f' "$src/README.md" >"$work/tour.c"
[[ -s $work/tour.c ]] || fail "no C block in README.md"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$work/tour" "$work/tour.c" \
  $(pkg-config --cflags --libs shopcore) \
  -Wl,-rpath,"$(pkg-config --variable=libdir shopcore)"
out=$(cd "$work" && ./tour)
[[ $out == *"SC_OK"*"verify: ok"* ]] || fail "the README's C tour printed: $out"

echo "-- Python package from the install"
python=$(sed -n 's/^Python3_EXECUTABLE:[A-Z]*=//p' "$work/build/CMakeCache.txt")
if [[ -z $python ]]; then
  fail "the build found no Python for the bindings (scripts/install-deps.sh installs it)"
fi
site=$(find "$prefix" -path '*/site-packages/shopcore/__init__.py' -printf '%h\n' | head -1)
[[ -n $site ]] || fail "the Python package is not installed under $prefix"
ls "$site"/_shopcore*.so >/dev/null || fail "no extension module in $site"
(cd "$work" && PYTHONPATH=$(dirname "$site") PYTHONDONTWRITEBYTECODE=1 "$python" - "$work/c.db" "$site" <<'PY'
import os, sys
import shopcore
assert os.path.dirname(shopcore.__file__) == sys.argv[2], shopcore.__file__
with shopcore.open(sys.argv[1]) as db:
    policy = db.create_policy("installed", max_count=1)
    coupon = db.issue_coupon(policy, 1)
    try:
        db.issue_coupon(policy, 2)
        raise SystemExit("a second coupon of a 1-coupon policy")
    except shopcore.SoldOut:
        pass
    print("python: coupon", coupon, "then SoldOut, verify", db.verify())
PY
)

echo "-- the README's Python tour, with the installed package"
awk '/^```python$/ {f = 1; next} /^```$/ {if (f) exit} f' "$src/README.md" >"$work/tour.py"
[[ -s $work/tour.py ]] || fail "no Python block in README.md"
mkdir "$work/pytour"
out=$(cd "$work/pytour" && PYTHONPATH=$(dirname "$site") PYTHONDONTWRITEBYTECODE=1 \
  "$python" "$work/tour.py") || fail "the README's Python tour failed"
[[ $out == *"Stock(total=8"*"ok"* ]] || fail "the README's Python tour printed: $out"

echo "-- the installed shopcore program"
"$prefix/bin/shopcore" init --db "$work/d.db" >/dev/null
"$prefix/bin/shopcore" verify --db "$work/d.db"
echo "install check passed"
