/* canary.c - proves that the sanitizer and valgrind runs can fail at all.
 *
 * Built like the C tests (with the sanitizers for the ASan run, plainly for
 * valgrind) and run by tests/sanitize/run.sh and tests/valgrind/run.sh before
 * the real tests, each mode expecting the report it provokes:
 *   canary leak   leaks an ns_options made inside the (uninstrumented) Rust
 *                 library: LeakSanitizer and memcheck must both see Rust's
 *                 allocations, or a leak in netsock would pass unnoticed.
 *   canary ub     a signed overflow in C: UBSan must be linked in and fatal.
 * Not a test_* program, so tests/c/run.sh never picks it up.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "netsock.h"

static ns_options *volatile leaked;

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "leak") == 0) {
        leaked = ns_options_new();
        printf("canary: made ns_options %p\n", (void *)leaked);
        leaked = NULL; /* the only pointer to it is gone: a definite leak */
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "ub") == 0) {
        volatile int big = INT_MAX;
        int sum = big + 1; /* signed overflow: undefined behaviour */
        printf("canary: INT_MAX + 1 = %d\n", sum);
        return 0;
    }
    fprintf(stderr, "usage: canary leak|ub\n");
    return 2;
}
