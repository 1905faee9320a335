/*
 * Linked into every Check program of a ThreadSanitizer build (see
 * teshim_add_check in CMakeLists.txt); TSAN_OPTIONS still overrides it.
 *
 * intercept_send=0: the sanitizer's sendmsg wrapper publishes the socket
 * release before the system call but records the reads of the sent buffers
 * only after it returns. A sender descheduled between the two shows the
 * peer's later, properly ordered write into the same memory (the peer could
 * only write after receiving what was sent) as a race. Ordering through
 * sockets is still modelled; only the late buffer-read records are dropped.
 */
const char *__tsan_default_options(void);

const char *__tsan_default_options(void)
{
    return "intercept_send=0";
}
