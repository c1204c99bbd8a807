#!/bin/sh
# make install into a temporary prefix (and with DESTDIR), then build tests/install/ex.c with
# `cc ex.c $(pkg-config --cflags --libs netsock)` (shared) and with --static, and as the CMake
# project tests/install/cmake (netsock::netsock and netsock::netsock_static) against both
# installs, run each build, and make uninstall. Usage: sh tests/install/check.sh (from the top
# of the repository; needs cmake, which `make test-install` installs when missing).
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

# CMake: the consumer finds the package under a prefix (the staged one too: its paths are
# relative), links ex.c to each target; both builds run, the static one without libnetsock.so.
cmake_consumer() {
    out=$tmp/cmake-$2
    { cmake -S tests/install/cmake -B "$out" -DCMAKE_PREFIX_PATH="$1" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF &&
      cmake --build "$out"; } >"$out.log" 2>&1 || { cat "$out.log"; echo "install: CMake consumer ($2) failed"; exit 1; }
    grep -qx "netsock_DIR:PATH=$1/lib/cmake/netsock" "$out/CMakeCache.txt" ||
        { echo "install: CMake ($2) found another netsock: $(grep '^netsock_DIR' "$out/CMakeCache.txt")"; exit 1; }
    readelf -d "$out/ex_shared" | grep -q "NEEDED.*\[$soname\]" || { echo "install: CMake ($2): not linked by soname"; exit 1; }
    if readelf -d "$out/ex_static" | grep -q netsock; then echo "install: CMake ($2): the static build needs libnetsock.so"; exit 1; fi
    "$out/ex_shared" && "$out/ex_static"
}
cmake_consumer "$prefix" prefix
cmake_consumer "$tmp/stage/usr" staged

# The version file answers as the soname does: the same major, at least the version asked for.
reqs="0.0.1 0.1 0.1.0 0.2 1.0 9"
answers=$(cmake -Ddir="$lib/cmake/netsock" -DREQS="$(echo $reqs | tr ' ' ';')" -P tests/install/cmake/ask_version.cmake 2>&1 | tr '\n' ' ')
expected=$(for req in $reqs; do
    if [ "${req%%.*}" = "${version%%.*}" ] && [ "$(printf '%s\n%s\n' "$req" "$version" | sort -V | tail -n 1)" = "$version" ]
    then echo "$req=TRUE"; else echo "$req=FALSE"; fi; done | tr '\n' ' ')
[ "$answers" = "$expected" ] || { echo "install: netsockConfigVersion.cmake says $answers, expected $expected"; exit 1; }

make -s uninstall PREFIX="$prefix" >/dev/null
left=$(find "$prefix" -type f -o -type l)
[ -z "$left" ] || { echo "install: uninstall left $left"; exit 1; }
echo "install: soname $soname, pkg-config and CMake (prefix and staged) shared and static builds run, uninstall clean"
