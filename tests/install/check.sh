#!/bin/sh
# make install into a temporary prefix (and with DESTDIR), then build tests/install/ex.c with
# `cc ex.c $(pkg-config --cflags --libs netsock)` (shared) and with --static, run both, and
# make uninstall. Usage: sh tests/install/check.sh (from the top of the repository).
set -eu
tmp=$(mktemp -d "${TMPDIR:-/tmp}/netsock-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
make -s install PREFIX="$prefix" >/dev/null
lib=$prefix/lib
version=$(sed -n 's/^Version: //p' "$lib/pkgconfig/netsock.pc")
real=libnetsock.so.$version
soname=libnetsock.so.${version%%.*}
test -f "$lib/$real" && test "$(readlink "$lib/$soname")" = "$real" && test "$(readlink "$lib/libnetsock.so")" = "$soname"
readelf -d "$lib/$real" | grep -q "SONAME.*\[$soname\]" || { echo "install: soname is not $soname"; exit 1; }
test -f "$lib/libnetsock.a" && test -f "$prefix/include/netsock.h"

export PKG_CONFIG_PATH=$lib/pkgconfig
cc tests/install/ex.c -o "$tmp/shared" $(pkg-config --cflags --libs netsock) -Wl,-rpath,"$lib"
readelf -d "$tmp/shared" | grep -q "NEEDED.*\[$soname\]" || { echo "install: not linked by soname"; exit 1; }
"$tmp/shared"
# Static: the archive itself, plus the Libs.private of the .pc file.
cc tests/install/ex.c -o "$tmp/static" $(pkg-config --cflags --static --libs netsock | sed 's/-lnetsock\b/-l:libnetsock.a/')
if readelf -d "$tmp/static" | grep -q netsock; then echo "install: the static build needs libnetsock.so"; exit 1; fi
"$tmp/static"

make -s install DESTDIR="$tmp/stage" PREFIX=/usr >/dev/null
test -f "$tmp/stage/usr/lib/$real" && grep -q '^prefix=/usr$' "$tmp/stage/usr/lib/pkgconfig/netsock.pc"

make -s uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f -o -type l)
[ -z "$left" ] || { echo "install: uninstall left $left"; exit 1; }
echo "install: soname $soname, pkg-config shared and static builds run, uninstall clean"
