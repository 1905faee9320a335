/*
 * The failure injector of fi_inject.h: __wrap_ definitions for the link's
 * --wrap options, forwarding to __real_ unless the armed call is reached.
 */
#include "fi_inject.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
int __real_socket(int domain, int type, int proto);
int __real_epoll_create1(int flags);
int __real_eventfd(unsigned int initval, int flags);
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_realloc(void *p, size_t n);
int __wrap_socket(int domain, int type, int proto);
int __wrap_epoll_create1(int flags);
int __wrap_eventfd(unsigned int initval, int flags);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

static atomic_long countdown; /* <= 0: disarmed */
static atomic_long calls;
static atomic_bool fired;

void fi_arm(long n)
{
    atomic_store(&calls, 0);
    atomic_store(&fired, false);
    atomic_store(&countdown, n > 0 ? n : 0);
}

long fi_calls(void)
{
    return atomic_load(&calls);
}

bool fi_fired(void)
{
    return atomic_load(&fired);
}

/* Count a call; true when it is the one to fail. */
static bool fi_hit(int err)
{
    atomic_fetch_add(&calls, 1);
    if (atomic_load(&countdown) <= 0 || atomic_fetch_sub(&countdown, 1) != 1)
        return false;
    atomic_store(&fired, true);
    errno = err;
    return true;
}

__attribute__((constructor)) static void fi_init(void)
{
    const char *s = getenv("TESHIM_FI_NTH");
    if (s)
        fi_arm(strtol(s, NULL, 10));
}

void *__wrap_malloc(size_t n)
{
    return fi_hit(ENOMEM) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t sz)
{
    return fi_hit(ENOMEM) ? NULL : __real_calloc(n, sz);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fi_hit(ENOMEM) ? NULL : __real_realloc(p, n);
}

int __wrap_socket(int domain, int type, int proto)
{
    return fi_hit(EMFILE) ? -1 : __real_socket(domain, type, proto);
}

int __wrap_epoll_create1(int flags)
{
    return fi_hit(EMFILE) ? -1 : __real_epoll_create1(flags);
}

int __wrap_eventfd(unsigned int initval, int flags)
{
    return fi_hit(EMFILE) ? -1 : __real_eventfd(initval, flags);
}

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    return fi_hit(EAGAIN) ? EAGAIN : __real_pthread_create(th, attr, fn, arg);
}
