#!/bin/sh
# Header quality: include/netsock.h compiles on its own as strict C99 and as C++, carries the
# version of Cargo.toml, and matches the library: every exported symbol is an ns_* function
# declared (with a doc comment) in the header, and every declared function is exported.
# Usage: sh tests/header/check.sh BUILD_DIR VERSION
set -eu
build=$1
version=$2
h=include/netsock.h
out=$build/tests/header
mkdir -p "$out"
fail=0
bad() { echo "header: $*"; fail=1; }

printf '#include "netsock.h"\n' > "$out/alone.c"
cc -std=c99 -Wall -Wextra -Wpedantic -Werror -Iinclude -c "$out/alone.c" -o "$out/alone.o" \
    || bad "does not compile alone with -std=c99 -Wall -Wextra -Wpedantic -Werror"

# From C++ the declarations must have C linkage: link and call through them.
cat > "$out/cxx.cpp" <<'CXX'
#include "netsock.h"
#include <cstring>
int main() {
    ns_options *o = ns_options_new();
    int rc = ns_options_set_framing(o, NS_FRAMING_LINE);
    ns_options_free(o);
    return rc == NS_OK && std::strlen(ns_version()) > 0 ? 0 : 1;
}
CXX
${CXX:-c++} -std=c++11 -Wall -Wextra -Wpedantic -Werror -Iinclude "$out/cxx.cpp" -o "$out/cxx" \
    -L"$build" -lnetsock -Wl,-rpath,"$(cd "$build" && pwd)" && "$out/cxx" \
    || bad "does not build, link and run from C++"

major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}; patch=${rest#*.}
for part in "MAJOR $major" "MINOR $minor" "PATCH $patch"; do
    set -- $part
    grep -q "^#define NS_VERSION_$1 $2\$" "$h" || bad "NS_VERSION_$1 is not $2 (Cargo.toml says $version)"
done

nm -D --defined-only "$build/libnetsock.so" | awk '$2 ~ /^[TDBRV]$/ {print $3}' | sort > "$out/exported"
grep -o '\bns_[a-z0-9_]*(' "$h" | tr -d '(' | sort -u > "$out/declared"
others=$(grep -v '^ns_' "$out/exported" || true)
[ -z "$others" ] || bad "exports symbols outside the ns_ namespace: $others"
missing=$(comm -23 "$out/exported" "$out/declared")
[ -z "$missing" ] || bad "exported but not declared in the header: $missing"
absent=$(comm -13 "$out/exported" "$out/declared")
[ -z "$absent" ] || bad "declared in the header but not exported: $absent"

# Every function declaration follows a doc comment.
undocumented=$(awk '/\*\/$/ {doc=1; next} /^[a-z].*\bns_[a-z0-9_]*\(/ {if (!doc) print; doc=0; next} {doc=0}' "$h")
[ -z "$undocumented" ] || bad "undocumented declarations: $undocumented"

[ "$fail" -eq 0 ] && echo "header: C99 and C++ clean, version $version, $(wc -l < "$out/exported") exported ns_* functions all declared and documented"
exit "$fail"
