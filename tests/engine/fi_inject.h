/*
 * A test-only failure injector, linked into a test with -Wl,--wrap for
 * malloc, calloc, realloc, socket, epoll_create1, eventfd and
 * pthread_create: every call from the objects of that link (the engine and
 * policy archives and the test itself, not libc's or Check's own calls) is
 * counted, and the Nth call after fi_arm(N) fails as the real one would
 * under exhaustion (NULL / -1 with ENOMEM, EMFILE; EAGAIN for threads).
 * TESHIM_FI_NTH=N in the environment arms it at startup.
 */
#ifndef TESHIM_FI_INJECT_H
#define TESHIM_FI_INJECT_H

#include <stdbool.h>

/* Fail the nth counted call from now (n >= 1); 0 disarms. Resets the count. */
void fi_arm(long n);
/* Counted calls since the last fi_arm. */
long fi_calls(void);
/* Whether the armed failure has happened. */
bool fi_fired(void);

#endif
