/* Recursive-descent JSON reader (RFC 8259 subset: no surrogate pairs). */
#include "tsc_json.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
    const char *s;
    const char *start;
    char *err;
    size_t errlen;
    int depth;
};

static void fail(struct parser *p, const char *what)
{
    int line = 1;

    if (p->err[0])
        return;
    for (const char *c = p->start; c < p->s; c++)
        line += *c == '\n';
    snprintf(p->err, p->errlen, "line %d: %s", line, what);
}

static void skip_ws(struct parser *p)
{
    while (*p->s && isspace((unsigned char)*p->s))
        p->s++;
}

static struct tsc_json *node(enum tsc_json_type t)
{
    struct tsc_json *j = calloc(1, sizeof(*j));

    if (j)
        j->type = t;
    return j;
}

static char *parse_string(struct parser *p)
{
    size_t cap = 32, n = 0;
    char *out = malloc(cap);

    if (!out)
        return NULL;
    p->s++; /* opening quote */
    while (*p->s && *p->s != '"') {
        char c = *p->s++;
        if ((unsigned char)c < 0x20) {
            fail(p, "control character in string");
            goto err;
        }
        if (c == '\\') {
            char e = *p->s++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                c = e;
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    if (!isxdigit((unsigned char)p->s[i])) {
                        fail(p, "bad \\u escape");
                        goto err;
                    }
                    v = v * 16 + (unsigned)(isdigit((unsigned char)p->s[i])
                                                ? p->s[i] - '0'
                                                : (tolower((unsigned char)p->s[i]) - 'a' + 10));
                }
                p->s += 4;
                c = v < 0x80 ? (char)v : '?';
                break;
            }
            default:
                fail(p, "bad escape in string");
                goto err;
            }
        }
        if (n + 2 > cap) {
            char *bigger = realloc(out, cap *= 2);
            if (!bigger)
                goto err;
            out = bigger;
        }
        out[n++] = c;
    }
    if (*p->s != '"') {
        fail(p, "unterminated string");
        goto err;
    }
    p->s++;
    out[n] = '\0';
    return out;
err:
    free(out);
    return NULL;
}

static struct tsc_json *parse_value(struct parser *p);

static struct tsc_json *parse_container(struct parser *p, bool obj)
{
    struct tsc_json *j = node(obj ? TSC_JSON_OBJ : TSC_JSON_ARR), **tail;
    char close = obj ? '}' : ']';

    if (!j)
        return NULL;
    tail = &j->child;
    p->s++;
    skip_ws(p);
    if (*p->s == close) {
        p->s++;
        return j;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (obj) {
            if (*p->s != '"') {
                fail(p, "expected a member name");
                goto err;
            }
            key = parse_string(p);
            if (!key)
                goto err;
            skip_ws(p);
            if (*p->s != ':') {
                free(key);
                fail(p, "expected ':'");
                goto err;
            }
            p->s++;
        }
        struct tsc_json *v = parse_value(p);
        if (!v) {
            free(key);
            goto err;
        }
        v->key = key;
        *tail = v;
        tail = &v->next;
        skip_ws(p);
        if (*p->s == ',') {
            p->s++;
            continue;
        }
        if (*p->s == close) {
            p->s++;
            return j;
        }
        fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        goto err;
    }
err:
    tsc_json_free(j);
    return NULL;
}

static struct tsc_json *parse_value(struct parser *p)
{
    struct tsc_json *j;

    skip_ws(p);
    if (++p->depth > 64) {
        fail(p, "nested too deeply");
        return NULL;
    }
    switch (*p->s) {
    case '{':
    case '[':
        j = parse_container(p, *p->s == '{');
        break;
    case '"':
        j = node(TSC_JSON_STR);
        if (j && !(j->str = parse_string(p))) {
            free(j);
            j = NULL;
        }
        break;
    case 't':
    case 'f':
    case 'n': {
        static const struct {
            const char *w;
            enum tsc_json_type t;
            double v;
        } lits[] = {
            {"true", TSC_JSON_BOOL, 1}, {"false", TSC_JSON_BOOL, 0}, {"null", TSC_JSON_NULL, 0}};
        j = NULL;
        for (size_t i = 0; i < 3; i++) {
            size_t n = strlen(lits[i].w);
            if (strncmp(p->s, lits[i].w, n) == 0) {
                p->s += n;
                j = node(lits[i].t);
                if (j)
                    j->num = lits[i].v;
                break;
            }
        }
        if (!j)
            fail(p, "unexpected word");
        break;
    }
    default: {
        char *end;
        errno = 0;
        double v = strtod(p->s, &end);
        if (end == p->s || !(isdigit((unsigned char)*p->s) || *p->s == '-')) {
            fail(p, "unexpected character");
            j = NULL;
            break;
        }
        p->s = end;
        j = node(TSC_JSON_NUM);
        if (j)
            j->num = v;
        break;
    }
    }
    p->depth--;
    return j;
}

struct tsc_json *tsc_json_parse(const char *text, char *err, size_t errlen)
{
    struct parser p = {text, text, err, errlen, 0};
    struct tsc_json *j;

    err[0] = '\0';
    j = parse_value(&p);
    if (!j) {
        fail(&p, "out of memory");
        return NULL;
    }
    skip_ws(&p);
    if (*p.s) {
        fail(&p, "trailing text after the document");
        tsc_json_free(j);
        return NULL;
    }
    return j;
}

struct tsc_json *tsc_json_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    char *text = NULL;
    size_t n = 0, cap = 0;

    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *bigger = realloc(text, cap = cap ? cap * 2 : 8192);
            if (!bigger) {
                free(text);
                fclose(f);
                snprintf(err, errlen, "out of memory");
                return NULL;
            }
            text = bigger;
        }
        size_t r = fread(text + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    text[n] = '\0';
    struct tsc_json *j = tsc_json_parse(text, err, errlen);
    free(text);
    return j;
}

void tsc_json_free(struct tsc_json *j)
{
    while (j) {
        struct tsc_json *next = j->next;
        tsc_json_free(j->child);
        free(j->str);
        free(j->key);
        free(j);
        j = next;
    }
}

const struct tsc_json *tsc_json_get(const struct tsc_json *j, const char *key)
{
    if (!j || j->type != TSC_JSON_OBJ)
        return NULL;
    for (const struct tsc_json *m = j->child; m; m = m->next)
        if (m->key && strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

double tsc_json_num(const struct tsc_json *j, const char *key, double dflt)
{
    const struct tsc_json *m = tsc_json_get(j, key);

    return m && (m->type == TSC_JSON_NUM || m->type == TSC_JSON_BOOL) ? m->num : dflt;
}

const char *tsc_json_str(const struct tsc_json *j, const char *key, const char *dflt)
{
    const struct tsc_json *m = tsc_json_get(j, key);

    return m && m->type == TSC_JSON_STR ? m->str : dflt;
}
