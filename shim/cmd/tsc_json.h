/*
 * A small JSON reader for the teshim command: teshim's own reports and bench
 * outputs. Parses a document into a tree of nodes allocated from the heap.
 */
#ifndef TESHIM_TSC_JSON_H
#define TESHIM_TSC_JSON_H

#include <stdbool.h>
#include <stddef.h>

enum tsc_json_type {
    TSC_JSON_NULL,
    TSC_JSON_BOOL,
    TSC_JSON_NUM,
    TSC_JSON_STR,
    TSC_JSON_ARR,
    TSC_JSON_OBJ
};

struct tsc_json {
    enum tsc_json_type type;
    double num;             /* NUM; BOOL as 0/1 */
    char *str;              /* STR; object member name in ->key */
    char *key;              /* set on members of an object */
    struct tsc_json *child; /* first element / member */
    struct tsc_json *next;  /* next sibling */
};

/* Parse text; NULL on error with a message ("line N: expected ...") in err. */
struct tsc_json *tsc_json_parse(const char *text, char *err, size_t errlen);
/* Read and parse a file; NULL with the cause in err. */
struct tsc_json *tsc_json_load(const char *path, char *err, size_t errlen);
void tsc_json_free(struct tsc_json *j);

/* Member of an object by name; NULL if absent or j is not an object. */
const struct tsc_json *tsc_json_get(const struct tsc_json *j, const char *key);
/* Convenience: number / string member with a fallback. */
double tsc_json_num(const struct tsc_json *j, const char *key, double dflt);
const char *tsc_json_str(const struct tsc_json *j, const char *key, const char *dflt);

#endif
