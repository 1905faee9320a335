/*
 * The listener and the handshake server (eng_listen.c): a service below
 * the transports, beside the metadata client. Not installed.
 */
#ifndef TESHIM_ENG_LISTEN_H
#define TESHIM_ENG_LISTEN_H

#include "eng_tp.h"

struct eng_listener;

/* Hand a connection whose HELLO was answered to a transport: 0 if one
 * took fd, else non-zero (the listener closes it). */
typedef int (*eng_adopt_fn)(void *arg, int fd, const char *pname);
/* Answer the trailer of a HELLO received on fd (in[0, in_len)): append
 * the transports' records to out[0, max), *out_len set. 0 or -errno (the
 * listener closes the connection). */
typedef int (*eng_hello_fn)(void *arg, int fd, const uint8_t *in, size_t in_len, uint8_t *out,
                            size_t max, size_t *out_len);

/*
 * Listen on host ("HOST:PORT", port 0 = any; SO_REUSEPORT after checking
 * the port is free), answer HELLOs on a thread of its own, and pass each
 * answered connection to adopt(arg, ...); the HELLO_ACK's trailer comes
 * from hello(arg, ...). *port_p is the port bound.
 * 0, or -errno (logged).
 */
int eng_listener_start(struct eng_ctx *eng, const char *host, eng_adopt_fn adopt,
                       eng_hello_fn hello, void *arg, int *port_p, struct eng_listener **l_p);
/* Stop the thread, close the listener and the unfinished handshakes.
 * NULL is ignored. */
void eng_listener_stop(struct eng_listener *l);

#endif
