/* A strict JSON parser that writes the RFC 8785 (JCS) text of what it reads.
 *
 * It accepts only what Parity's Python definition reads the same way (orjson's strict
 * JSON, rfc8785's output) and reports everything else as a reason other than J_OK: bad
 * syntax, integers beyond 2^53, duplicate keys, keys that need escaping, long or
 * non-finite numbers, nesting beyond the cap. The caller treats every such reason as
 * "undecided" and leaves the text to Python; nothing here is a verdict on its own.
 */
#ifndef PARITY_CANON_H
#define PARITY_CANON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    J_OK = 0,
    J_SYNTAX,  /* not JSON as orjson reads it */
    J_BIGINT,  /* an integer beyond 2^53 - 1 in magnitude */
    J_DUPKEY,  /* a key twice in one object */
    J_ODDKEY,  /* a key JCS writes with an escape: its order is left to Python */
    J_NUMBER,  /* a number too long, or beyond the range of a double */
    J_DEPTH,   /* nesting beyond the cap */
    J_NOMEM,
    J_REASONS
};

extern const char *const canon_reasons[J_REASONS];

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

int buf_reserve_slow(Buf *b, size_t need);
static inline int buf_reserve(Buf *b, size_t extra) {
    return b->len + extra <= b->cap ? 0 : buf_reserve_slow(b, b->len + extra);
}
static inline int buf_put(Buf *b, const void *s, size_t n) {
    if (!n) return 0;
    if (buf_reserve(b, n)) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}
static inline int buf_putc(Buf *b, uint8_t ch) {
    if (buf_reserve(b, 1)) return -1;
    b->p[b->len++] = ch;
    return 0;
}
void buf_free(Buf *b);

/* A member of an object being canonicalised: offsets into the output. */
typedef struct {
    size_t key, key_end, end; /* key text (no quotes), and the end of "key":value */
} Member;

typedef struct {
    const uint8_t *p, *end; /* the input still to read */
    Buf out;                /* canonical text written so far */
    Buf scratch;            /* reordering members */
    Member *members;        /* a stack shared by the open objects */
    size_t nmembers, capmembers;
    int depth, max_depth;
    /* Set when a double of 1e15 or more was written as integer digits: text that reads
     * back as an integer (beyond 2^53 perhaps), not as the double, so it is fit to verify
     * but not to store as the event's payload. */
    int wrote_integral_double;
    /* While a kernel loop runs without the GIL: the thread state it saved (a
     * PyThreadState *), so that the two CPython number routines, which need the GIL, can
     * take it back for their call. NULL when the caller holds the GIL. */
    void *released;
} Canon;

void canon_init(Canon *c, int max_depth);
void canon_free(Canon *c);
/* Point the parser at new input; the output is kept (callers reset out.len themselves). */
static inline void canon_input(Canon *c, const uint8_t *p, size_t n) {
    c->p = p;
    c->end = p + n;
    c->depth = 0;
    c->nmembers = 0;
    c->wrote_integral_double = 0;
}

static inline void canon_skip_ws(Canon *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* The value at c->p, canonical, appended to c->out. */
int canon_value(Canon *c);
/* The string at c->p (which must be '"'), canonical, appended to c->out; *codepoints
 * receives the length of its value in code points. */
int canon_string(Canon *c, size_t *codepoints);
/* A whole text: one value between optional whitespace. */
int canon_text(Canon *c, const uint8_t *p, size_t n);
/* The JCS string of raw UTF-8 text (no JSON escapes in it), appended to out. */
int canon_raw_string(Buf *out, const uint8_t *s, size_t n);

#endif
