/* JSON text to RFC 8785 text (see _canon.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_canon.h"

#include <math.h>
#include <stdlib.h>

const char *const canon_reasons[J_REASONS] = {
    "ok", "invalid JSON", "integer beyond 2^53", "duplicate key", "key needing an escape",
    "unusual number", "nested too deep", "out of memory"};

/* Longest number text handled here; longer ones are left to Python. */
#define MAX_NUMBER_TEXT 400

#define TRY(expr)                      \
    do {                               \
        int e_ = (expr);               \
        if (e_) return e_;             \
    } while (0)
#define PUT(b, s, n) TRY(buf_put((b), (s), (n)) ? J_NOMEM : J_OK)
#define PUTC(b, ch) TRY(buf_putc((b), (uint8_t)(ch)) ? J_NOMEM : J_OK)

int buf_reserve_slow(Buf *b, size_t need) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void canon_init(Canon *c, int max_depth) {
    memset(c, 0, sizeof *c);
    c->max_depth = max_depth;
}

void canon_free(Canon *c) {
    buf_free(&c->out);
    buf_free(&c->scratch);
    free(c->members);
    c->members = NULL;
    c->capmembers = c->nmembers = 0;
}

/* ------------------------------------------------------------------ strings */

/* Length of the valid UTF-8 sequence at p (its lead byte >= 0x80), 0 when invalid:
 * overlong forms, surrogates, beyond U+10FFFF, cut short (what orjson refuses). */
static inline int utf8_len(const uint8_t *p, const uint8_t *end) {
    uint8_t a = p[0];
    ptrdiff_t room = end - p;
    if (a < 0xC2) return 0;
    if (a < 0xE0) return room >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (a < 0xF0) {
        if (room < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (a == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
        if (a == 0xED && p[1] >= 0xA0) return 0; /* a surrogate */
        return 3;
    }
    if (a < 0xF5) {
        if (room < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (a == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (a == 0xF4 && p[1] >= 0x90) return 0; /* beyond U+10FFFF */
        return 4;
    }
    return 0;
}

/* A code point as RFC 8785 writes it inside a string. */
static int put_codepoint(Buf *o, uint32_t cp) {
    static const char hex[] = "0123456789abcdef";
    if (cp < 0x20) {
        const char *short_form = NULL;
        switch (cp) {
        case '\b': short_form = "\\b"; break;
        case '\t': short_form = "\\t"; break;
        case '\n': short_form = "\\n"; break;
        case '\f': short_form = "\\f"; break;
        case '\r': short_form = "\\r"; break;
        }
        if (short_form) PUT(o, short_form, 2);
        else {
            char u[6] = {'\\', 'u', '0', '0', hex[cp >> 4], hex[cp & 15]};
            PUT(o, u, 6);
        }
        return J_OK;
    }
    if (cp == '"') PUT(o, "\\\"", 2);
    else if (cp == '\\') PUT(o, "\\\\", 2);
    else if (cp < 0x80) PUTC(o, cp);
    else {
        uint8_t u[4];
        size_t n;
        if (cp < 0x800) {
            u[0] = (uint8_t)(0xC0 | cp >> 6);
            u[1] = (uint8_t)(0x80 | (cp & 63));
            n = 2;
        } else if (cp < 0x10000) {
            u[0] = (uint8_t)(0xE0 | cp >> 12);
            u[1] = (uint8_t)(0x80 | (cp >> 6 & 63));
            u[2] = (uint8_t)(0x80 | (cp & 63));
            n = 3;
        } else {
            u[0] = (uint8_t)(0xF0 | cp >> 18);
            u[1] = (uint8_t)(0x80 | (cp >> 12 & 63));
            u[2] = (uint8_t)(0x80 | (cp >> 6 & 63));
            u[3] = (uint8_t)(0x80 | (cp & 63));
            n = 4;
        }
        PUT(o, u, n);
    }
    return J_OK;
}

static inline int hex4(const uint8_t *p, uint32_t *v) {
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t h = p[i];
        x <<= 4;
        if (h >= '0' && h <= '9') x |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') x |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') x |= (uint32_t)(h - 'A' + 10);
        else return -1;
    }
    *v = x;
    return 0;
}

/* True when one of eight bytes may need attention in a string: a quote, a backslash, a
 * control character or a byte >= 0x80. False alarms are allowed (the byte loop decides). */
static inline int may_stop(uint64_t x) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    return (((x - ones * 0x20) | (quote - ones) | (backslash - ones) | x) & highs) != 0;
}

int canon_string(Canon *c, size_t *codepoints) {
    const uint8_t *p = c->p + 1, *end = c->end, *run = p;
    Buf *o = &c->out;
    size_t ncp = 0;
    PUTC(o, '"');
    for (;;) {
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            if (may_stop(x)) break;
            p += 8;
            ncp += 8;
        }
        if (p >= end) return J_SYNTAX;
        uint8_t ch = *p;
        if (ch == '"') break;
        if (ch >= 0x20 && ch != '\\' && ch < 0x80) {
            p++;
            ncp++;
            continue;
        }
        if (ch >= 0x80) {
            int n = utf8_len(p, end);
            if (!n) return J_SYNTAX;
            p += n;
            ncp++;
            continue;
        }
        if (ch < 0x20) return J_SYNTAX;
        /* an escape: flush the plain run, then write the code point as JCS does */
        PUT(o, run, (size_t)(p - run));
        if (end - p < 2) return J_SYNTAX;
        uint32_t cp;
        switch (p[1]) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u': cp = 0x110000; break;
        default: return J_SYNTAX;
        }
        if (cp != 0x110000) p += 2;
        else {
            if (end - p < 6 || hex4(p + 2, &cp)) return J_SYNTAX;
            p += 6;
            if (cp >= 0xDC00 && cp < 0xE000) return J_SYNTAX; /* a lone low surrogate */
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t low;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) ||
                    low < 0xDC00 || low >= 0xE000)
                    return J_SYNTAX; /* a lone high surrogate */
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
        }
        ncp++;
        TRY(put_codepoint(o, cp));
        run = p;
    }
    PUT(o, run, (size_t)(p - run));
    PUTC(o, '"');
    c->p = p + 1;
    if (codepoints) *codepoints = ncp;
    return J_OK;
}

int canon_raw_string(Buf *o, const uint8_t *s, size_t n) {
    const uint8_t *end = s + n, *run = s;
    PUTC(o, '"');
    while (s < end) {
        uint8_t ch = *s;
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch < 0x80) {
            s++;
            continue;
        }
        if (ch >= 0x80) {
            int k = utf8_len(s, end);
            if (!k) return J_SYNTAX;
            s += k;
            continue;
        }
        PUT(o, run, (size_t)(s - run));
        TRY(put_codepoint(o, ch));
        run = ++s;
    }
    PUT(o, run, (size_t)(s - run));
    PUTC(o, '"');
    return J_OK;
}

/* ------------------------------------------------------------------ numbers */

/* CPython's number routines allocate and may set an exception: they run with the GIL. */
static inline void gil_take(Canon *c) {
    if (c->released) PyEval_RestoreThread((PyThreadState *)c->released);
}
static inline void gil_drop(Canon *c) {
    if (c->released) c->released = PyEval_SaveThread();
}

static inline int is_digit(uint8_t ch) { return ch >= '0' && ch <= '9'; }

/* ECMAScript's Number::toString of a finite, non-zero double: the shortest digits that
 * read back as x (CPython's repr), laid out by the rules of ECMA-262 7.1.12.1. */
static int put_double(Canon *c, double x) {
    Buf *o = &c->out;
    if (x < 0) {
        PUTC(o, '-');
        x = -x;
    }
    gil_take(c);
    char *repr = PyOS_double_to_string(x, 'r', 0, 0, NULL);
    if (!repr) {
        PyErr_Clear();
        gil_drop(c);
        return J_NOMEM;
    }
    char digits[32];
    int k = 0, point = -1, exponent = 0;
    const char *q = repr;
    for (; *q && *q != 'e'; q++) {
        if (*q == '.') point = k;
        else if (k < (int)sizeof digits) digits[k++] = *q;
    }
    if (*q == 'e') exponent = atoi(q + 1);
    PyMem_Free(repr);
    gil_drop(c);
    if (point < 0) point = k;
    /* x = 0.DIGITS * 10^n, then without leading and trailing zeros */
    int n = point + exponent, first = 0;
    while (first < k && digits[first] == '0') {
        first++;
        n--;
    }
    while (k > first && digits[k - 1] == '0') k--;
    const char *d = digits + first;
    k -= first;
    if (k <= 0) return J_NUMBER; /* not reached for x != 0 */
    if (k <= n && n <= 21) {
        if (n > 15) c->wrote_integral_double = 1;
        PUT(o, d, (size_t)k);
        for (int i = k; i < n; i++) PUTC(o, '0');
    } else if (0 < n && n <= 21) {
        PUT(o, d, (size_t)n);
        PUTC(o, '.');
        PUT(o, d + n, (size_t)(k - n));
    } else if (-6 < n && n <= 0) {
        PUT(o, "0.", 2);
        for (int i = 0; i < -n; i++) PUTC(o, '0');
        PUT(o, d, (size_t)k);
    } else {
        char e[16];
        int len = snprintf(e, sizeof e, "e%c%d", n - 1 > 0 ? '+' : '-', abs(n - 1));
        PUTC(o, d[0]);
        if (k > 1) {
            PUTC(o, '.');
            PUT(o, d + 1, (size_t)(k - 1));
        }
        PUT(o, e, (size_t)len);
    }
    return J_OK;
}

static int canon_number(Canon *c) {
    const uint8_t *p = c->p, *end = c->end, *start = p;
    Buf *o = &c->out;
    int negative = 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end) return J_SYNTAX;
    const uint8_t *int_start = p;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && is_digit(*p)) p++;
    else return J_SYNTAX;
    const uint8_t *int_end = p, *frac = NULL, *frac_end = NULL;
    int has_exponent = 0;
    if (p < end && *p == '.') {
        frac = ++p;
        while (p < end && is_digit(*p)) p++;
        if (p == frac) return J_SYNTAX;
        frac_end = p;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        has_exponent = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const uint8_t *digits = p;
        while (p < end && is_digit(*p)) p++;
        if (p == digits) return J_SYNTAX;
    }
    c->p = p;
    size_t nint = (size_t)(int_end - int_start);
    if (!frac && !has_exponent) {
        /* an integer, exact up to 2^53 - 1 in magnitude */
        if (nint > 16 || (nint == 16 && memcmp(int_start, "9007199254740991", 16) > 0))
            return J_BIGINT;
        if (nint == 1 && *int_start == '0') {
            PUTC(o, '0'); /* -0 too */
            return J_OK;
        }
        if (negative) PUTC(o, '-');
        PUT(o, int_start, nint);
        return J_OK;
    }
    if (!has_exponent) {
        /* A plain decimal of at most 15 significant digits in [1e-6, 1e21) is already the
         * shortest text that reads back as its double (15 digits always round-trip), and
         * ECMAScript writes it in plain notation: only trailing zeros go. */
        const uint8_t *last = frac_end;
        while (last > frac && last[-1] == '0') last--;
        if (nint == 1 && *int_start == '0') {
            const uint8_t *lead = frac;
            while (lead < last && *lead == '0') lead++;
            if (lead == last) {
                PUTC(o, '0');
                return J_OK;
            }
            if (lead - frac <= 5 && last - lead <= 15) {
                if (negative) PUTC(o, '-');
                PUT(o, "0.", 2);
                PUT(o, frac, (size_t)(last - frac));
                return J_OK;
            }
        } else if (nint + (size_t)(last - frac) <= 15) {
            if (negative) PUTC(o, '-');
            PUT(o, int_start, nint);
            if (last > frac) {
                PUTC(o, '.');
                PUT(o, frac, (size_t)(last - frac));
            }
            return J_OK;
        }
    }
    /* everything else: CPython's correctly rounded strtod, then the shortest digits */
    size_t n = (size_t)(p - start);
    if (n > MAX_NUMBER_TEXT) return J_NUMBER;
    char text[MAX_NUMBER_TEXT + 1];
    memcpy(text, start, n);
    text[n] = 0;
    char *stop = NULL;
    gil_take(c);
    double x = PyOS_string_to_double(text, &stop, NULL);
    int raised = x == -1.0 && PyErr_Occurred();
    if (raised) PyErr_Clear();
    gil_drop(c);
    if (raised) return J_NUMBER;
    if (stop != text + n) return J_SYNTAX;
    if (!isfinite(x)) return J_NUMBER;
    if (x == 0) {
        PUTC(o, '0');
        return J_OK;
    }
    return put_double(c, x);
}

/* ------------------------------------------------------------------ containers */

/* Order of two keys (valid UTF-8) by UTF-16 code units (RFC 8785 3.2.3). Byte order is
 * code point order, which differs from UTF-16 order only between a character from
 * U+E000 to U+FFFF (lead byte 0xEE or 0xEF) and one beyond U+FFFF (lead byte 0xF0 or
 * more), whose surrogates sort first. */
static int key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
    size_t n = an < bn ? an : bn, i = 0;
    while (i < n && a[i] == b[i]) i++;
    if (i == n) return (an > bn) - (an < bn);
    while (i > 0 && (a[i] & 0xC0) == 0x80) i--; /* the start of the differing character */
    uint8_t la = a[i], lb = b[i];
    int a_astral = la >= 0xF0, b_astral = lb >= 0xF0;
    int a_high = la == 0xEE || la == 0xEF, b_high = lb == 0xEE || lb == 0xEF;
    if ((a_astral && b_high) || (a_high && b_astral)) return a_astral ? -1 : 1;
    /* same length class, or an order both schemes agree on: the bytes decide */
    size_t j = i;
    while (a[j] == b[j]) j++;
    return a[j] < b[j] ? -1 : 1;
}

static inline int member_cmp(const Canon *c, const Member *a, const Member *b) {
    const uint8_t *base = c->out.p;
    return key_cmp(base + a->key, a->key_end - a->key, base + b->key, b->key_end - b->key);
}

static int push_member(Canon *c, Member m) {
    if (c->nmembers == c->capmembers) {
        size_t cap = c->capmembers ? c->capmembers * 2 : 64;
        Member *grown = realloc(c->members, cap * sizeof *grown);
        if (!grown) return J_NOMEM;
        c->members = grown;
        c->capmembers = cap;
    }
    c->members[c->nmembers++] = m;
    return J_OK;
}

/* Put the members of the object whose text starts at body (after '{') in key order. */
static int sort_members(Canon *c, size_t base, size_t body) {
    Member *ms = c->members + base;
    size_t n = c->nmembers - base;
    int sorted = 1;
    for (size_t i = 1; i < n; i++) {
        int r = member_cmp(c, &ms[i - 1], &ms[i]);
        if (r == 0) return J_DUPKEY;
        if (r > 0) sorted = 0;
    }
    if (sorted) return J_OK;
    for (size_t i = 1; i < n; i++) { /* insertion sort: objects are small */
        Member m = ms[i];
        size_t j = i;
        while (j > 0 && member_cmp(c, &ms[j - 1], &m) > 0) {
            ms[j] = ms[j - 1];
            j--;
        }
        ms[j] = m;
    }
    for (size_t i = 1; i < n; i++)
        if (member_cmp(c, &ms[i - 1], &ms[i]) == 0) return J_DUPKEY;
    Buf *o = &c->out, *t = &c->scratch;
    t->len = 0;
    PUT(t, o->p + body, o->len - body);
    o->len = body;
    for (size_t i = 0; i < n; i++) {
        size_t from = ms[i].key - 1 - body, len = ms[i].end - (ms[i].key - 1);
        if (i) o->p[o->len++] = ',';
        memcpy(o->p + o->len, t->p + from, len);
        o->len += len;
    }
    return J_OK;
}

static int canon_object(Canon *c) {
    Buf *o = &c->out;
    if (++c->depth > c->max_depth) return J_DEPTH;
    c->p++;
    PUTC(o, '{');
    size_t body = o->len, base = c->nmembers;
    canon_skip_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
    } else {
        for (;;) {
            canon_skip_ws(c);
            if (c->p >= c->end || *c->p != '"') return J_SYNTAX;
            Member m;
            m.key = o->len + 1;
            TRY(canon_string(c, NULL));
            m.key_end = o->len - 1;
            if (memchr(o->p + m.key, '\\', m.key_end - m.key)) return J_ODDKEY;
            canon_skip_ws(c);
            if (c->p >= c->end || *c->p != ':') return J_SYNTAX;
            c->p++;
            PUTC(o, ':');
            canon_skip_ws(c);
            TRY(canon_value(c));
            m.end = o->len;
            TRY(push_member(c, m));
            canon_skip_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                PUTC(o, ',');
                continue;
            }
            if (c->p < c->end && *c->p == '}') {
                c->p++;
                break;
            }
            return J_SYNTAX;
        }
        TRY(sort_members(c, base, body));
        c->nmembers = base;
    }
    PUTC(o, '}');
    c->depth--;
    return J_OK;
}

static int canon_array(Canon *c) {
    Buf *o = &c->out;
    if (++c->depth > c->max_depth) return J_DEPTH;
    c->p++;
    PUTC(o, '[');
    canon_skip_ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
    } else {
        for (;;) {
            canon_skip_ws(c);
            TRY(canon_value(c));
            canon_skip_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                PUTC(o, ',');
                continue;
            }
            if (c->p < c->end && *c->p == ']') {
                c->p++;
                break;
            }
            return J_SYNTAX;
        }
    }
    PUTC(o, ']');
    c->depth--;
    return J_OK;
}

static int literal(Canon *c, const char *word, size_t n) {
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n)) return J_SYNTAX;
    c->p += n;
    PUT(&c->out, word, n);
    return J_OK;
}

int canon_value(Canon *c) {
    if (c->p >= c->end) return J_SYNTAX;
    switch (*c->p) {
    case '{': return canon_object(c);
    case '[': return canon_array(c);
    case '"': return canon_string(c, NULL);
    case 't': return literal(c, "true", 4);
    case 'f': return literal(c, "false", 5);
    case 'n': return literal(c, "null", 4);
    default:
        if (*c->p == '-' || is_digit(*c->p)) return canon_number(c);
        return J_SYNTAX;
    }
}

int canon_text(Canon *c, const uint8_t *p, size_t n) {
    canon_input(c, p, n);
    canon_skip_ws(c);
    TRY(canon_value(c));
    canon_skip_ws(c);
    return c->p == c->end ? J_OK : J_SYNTAX;
}
