/* parity.io.native._jcs: event checksums (contract §2) verified in C.
 *
 * The Python functions in parity.events define every verdict. This module answers only
 * what it has proven: a line or row is VALID or INVALID when it is an event of the plain
 * shape Parity's fast path accepts and its RFC 8785 text was written here exactly; it is
 * UNDECIDED otherwise (integers beyond 2^53, duplicate keys, long numbers, escapes in
 * identifiers, odd fields, anything malformed), and the caller asks Python.
 *
 *   scan_log(data, start_us, end_us, max_line, max_depth) -> tuple   (see py_scan_log)
 *   verify_columns(n, stream, seq, event_type, emitted_us, payload, checksum, max_depth)
 *   canonicalize(data, max_depth) -> bytes, ValueError(reason) when not decided here
 *   sha256_hex(data) -> str; sha256_routes() -> list; sha256_route() -> str;
 *   set_sha256_route(name)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_canon.h"
#include "_sha256.h"

enum { R_INVALID = 0, R_VALID = 1, R_UNDECIDED = 2, R_OUTSIDE = 3 };

#define MAX_SAFE_INTEGER 9007199254740991LL
#define MAX_STREAM_CHARS 128
#define US_PER_DAY 86400000000LL

static const char *const CATEGORY_NAMES[] = {"CRITICAL", "INFORMATIONAL", "LEGACY"};

/* ------------------------------------------------------------------ timestamps */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static inline int digits_at(const uint8_t *s, int n, int *value) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *value = v;
    return 1;
}

/* The instant of "YYYY-MM-DDTHH:MM:SS.ffffffZ" (its JSON text, quotes included) in
 * microseconds since the epoch; 0 when the text is not that shape or names no instant
 * datetime.fromisoformat accepts. */
static int normalised_instant(const uint8_t *s, size_t n, int64_t *us) {
    static const int month_days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 29 || s[0] != '"' || s[28] != '"') return 0;
    s++;
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != '.' || s[26] != 'Z')
        return 0;
    int y, mo, d, h, mi, se, f;
    if (!digits_at(s, 4, &y) || !digits_at(s + 5, 2, &mo) || !digits_at(s + 8, 2, &d) ||
        !digits_at(s + 11, 2, &h) || !digits_at(s + 14, 2, &mi) || !digits_at(s + 17, 2, &se) ||
        !digits_at(s + 20, 6, &f))
        return 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] || h > 23 || mi > 59 ||
        se > 59)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap) return 0;
    *us = days_from_civil(y, mo, d) * US_PER_DAY + ((int64_t)h * 3600 + mi * 60 + se) * 1000000LL + f;
    return 1;
}

/* ``width`` decimal digits of 0 <= v < 10^width, zero-padded. */
static inline void put_digits(char *out, int v, int width) {
    for (int i = width - 1; i >= 0; i--, v /= 10) out[i] = (char)('0' + v % 10);
}

/* The decimal text of v (no sign for v >= 0); its length (at most 20). */
static int format_int64(int64_t v, char out[24]) {
    char tmp[24];
    int n = 0, neg = v < 0;
    uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    int len = 0;
    if (neg) out[len++] = '-';
    while (n) out[len++] = tmp[--n];
    return len;
}

/* The normalised text of an instant, quotes included (29 bytes); 0 outside the years
 * 1000-9999, where Parity's Python formatting takes another route. */
static int format_instant(int64_t us, char out[29]) {
    int64_t days = us / US_PER_DAY, rest = us % US_PER_DAY;
    if (rest < 0) {
        rest += US_PER_DAY;
        days--;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 1000 || y > 9999) return 0;
    int64_t s = rest / 1000000, f = rest % 1000000;
    /* Written digit by digit: snprintf was a fifth of a row's time. */
    out[0] = '"';
    put_digits(out + 1, (int)y, 4);
    out[5] = '-';
    put_digits(out + 6, m, 2);
    out[8] = '-';
    put_digits(out + 9, d, 2);
    out[11] = 'T';
    put_digits(out + 12, (int)(s / 3600), 2);
    out[14] = ':';
    put_digits(out + 15, (int)(s / 60 % 60), 2);
    out[17] = ':';
    put_digits(out + 18, (int)(s % 60), 2);
    out[20] = '.';
    put_digits(out + 21, (int)f, 6);
    out[27] = 'Z';
    out[28] = '"';
    return 1;
}

/* ------------------------------------------------------------------ the checksum */

static uint8_t NOT_HEX[256];

static int is_hex64(const uint8_t *s, size_t n) { /* JSON text, quotes included */
    if (n != 66) return 0;
    uint8_t bad = 0;
    for (int i = 1; i < 65; i++) bad |= NOT_HEX[s[i]];
    return !bad;
}

typedef struct {
    const uint8_t *p;
    size_t n;
} Span;

/* sha256 of {"emitted_at":E,"event_type":T,"payload":P,"seq":N,"stream":S} (the JCS
 * texts of its members given) against 64 lowercase hex digits. */
static int digest_matches(Buf *covered, Span emitted, Span type, Span payload, int64_t seq,
                          Span stream, const uint8_t *hex64) {
    static const char hex[] = "0123456789abcdef";
    char number[24];
    int nlen = format_int64(seq, number);
    covered->len = 0;
    if (buf_put(covered, "{\"emitted_at\":", 14) || buf_put(covered, emitted.p, emitted.n) ||
        buf_put(covered, ",\"event_type\":", 14) || buf_put(covered, type.p, type.n) ||
        buf_put(covered, ",\"payload\":", 11) || buf_put(covered, payload.p, payload.n) ||
        buf_put(covered, ",\"seq\":", 7) || buf_put(covered, number, (size_t)nlen) ||
        buf_put(covered, ",\"stream\":", 10) || buf_put(covered, stream.p, stream.n) ||
        buf_putc(covered, '}'))
        return -1;
    uint8_t digest[32];
    sha256_digest(covered->p, covered->len, digest);
    for (int i = 0; i < 32; i++)
        if (hex64[2 * i] != hex[digest[i] >> 4] || hex64[2 * i + 1] != hex[digest[i] & 15])
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ log lines */

enum { F_STREAM, F_SEQ, F_TYPE, F_EMITTED, F_PAYLOAD, F_CHECKSUM, F_CATEGORY, F_LOGGED, NFIELDS };

typedef struct {
    size_t start[NFIELDS], end[NFIELDS]; /* canonical texts in the parser's output */
    int64_t seq, emitted_us, logged_us;
    int has_logged, declared; /* declared: 0 none, else 1 + index in CATEGORY_NAMES */
} LineEvent;

static int field_of(const uint8_t *k, size_t n) {
#define IS(name) (n == sizeof(name) - 1 && !memcmp(k, name, n))
    if (IS("stream")) return F_STREAM;
    if (IS("seq")) return F_SEQ;
    if (IS("event_type")) return F_TYPE;
    if (IS("emitted_at")) return F_EMITTED;
    if (IS("payload")) return F_PAYLOAD;
    if (IS("checksum")) return F_CHECKSUM;
    if (IS("category")) return F_CATEGORY;
    if (IS("logged_at")) return F_LOGGED;
    return -1;
#undef IS
}

/* A plain integer from 1 to 2^53 - 1 at c->p (what parse_event accepts as seq). */
static int read_seq(Canon *c, int64_t *seq) {
    const uint8_t *p = c->p;
    int64_t v = 0;
    int n = 0;
    if (p >= c->end || *p < '1' || *p > '9') return 0;
    while (p < c->end && *p >= '0' && *p <= '9' && n < 17) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (p < c->end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E'))
        return 0;
    if (v > MAX_SAFE_INTEGER) return 0;
    *seq = v;
    c->p = p;
    return 1;
}

static int is_null(Canon *c) {
    if (c->end - c->p >= 4 && !memcmp(c->p, "null", 4)) {
        c->p += 4;
        return 1;
    }
    return 0;
}

/* Read one line as an event of the plain shape: 1 when every field is one parse_event
 * accepts with the values read here (spans into c->out), 0 when Python must look. */
static int read_event(Canon *c, const uint8_t *line, size_t n, LineEvent *ev) {
    int seen[NFIELDS] = {0};
    size_t stream_chars = 0;
    Buf *o = &c->out;
    o->len = 0;
    canon_input(c, line, n);
    ev->has_logged = 0;
    ev->declared = 0;
    canon_skip_ws(c);
    if (c->p >= c->end || *c->p != '{') return 0;
    c->p++;
    c->depth = 1;
    canon_skip_ws(c);
    if (c->p < c->end && *c->p == '}') return 0;
    for (;;) {
        canon_skip_ws(c);
        if (c->p >= c->end || *c->p != '"') return 0;
        size_t key = o->len;
        if (canon_string(c, NULL)) return 0;
        int f = field_of(o->p + key + 1, o->len - key - 2);
        o->len = key;
        canon_skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return 0;
        c->p++;
        canon_skip_ws(c);
        if (c->p >= c->end) return 0;
        if (f >= 0) {
            if (seen[f]) return 0; /* a duplicate: orjson keeps the last, Python decides */
            seen[f] = 1;
        }
        size_t value = o->len;
        uint8_t first = *c->p;
        switch (f) {
        case F_SEQ:
            if (!read_seq(c, &ev->seq)) return 0;
            break;
        case F_PAYLOAD:
            if (first != '{' || canon_value(c)) return 0;
            break;
        case F_STREAM:
            if (first != '"' || canon_string(c, &stream_chars)) return 0;
            break;
        case F_TYPE:
        case F_EMITTED:
        case F_CHECKSUM:
            if (first != '"' || canon_string(c, NULL)) return 0;
            break;
        case F_CATEGORY:
        case F_LOGGED:
            if (is_null(c)) {
                seen[f] = 2; /* present, null: as if absent */
                break;
            }
            if (first != '"' || canon_string(c, NULL)) return 0;
            break;
        default:
            if (canon_value(c)) return 0; /* checked, then dropped */
            o->len = value;
        }
        if (f >= 0) {
            ev->start[f] = value;
            ev->end[f] = o->len;
        }
        canon_skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            break;
        }
        return 0;
    }
    canon_skip_ws(c);
    if (c->p != c->end || c->wrote_integral_double) return 0;
    for (int f = 0; f <= F_CHECKSUM; f++)
        if (!seen[f]) return 0;
    const uint8_t *b = o->p;
#define SPAN_LEN(f) (ev->end[f] - ev->start[f])
    if (SPAN_LEN(F_STREAM) <= 2 || stream_chars > MAX_STREAM_CHARS) return 0;
    if (SPAN_LEN(F_TYPE) <= 2) return 0;
    if (!normalised_instant(b + ev->start[F_EMITTED], SPAN_LEN(F_EMITTED), &ev->emitted_us))
        return 0;
    if (!is_hex64(b + ev->start[F_CHECKSUM], SPAN_LEN(F_CHECKSUM))) return 0;
    if (seen[F_CATEGORY] == 1) {
        const uint8_t *s = b + ev->start[F_CATEGORY] + 1;
        size_t len = SPAN_LEN(F_CATEGORY) - 2;
        for (int i = 0; i < 3 && !ev->declared; i++)
            if (strlen(CATEGORY_NAMES[i]) == len && !memcmp(s, CATEGORY_NAMES[i], len))
                ev->declared = 1 + i;
        if (!ev->declared) return 0;
    }
    if (seen[F_LOGGED] == 1) {
        if (!normalised_instant(b + ev->start[F_LOGGED], SPAN_LEN(F_LOGGED), &ev->logged_us))
            return 0;
        ev->has_logged = 1;
    }
    /* the identifiers go to the snapshot as their values: escapes are left to Python */
    if (memchr(b + ev->start[F_STREAM], '\\', SPAN_LEN(F_STREAM)) ||
        memchr(b + ev->start[F_TYPE], '\\', SPAN_LEN(F_TYPE)))
        return 0;
#undef SPAN_LEN
    return 1;
}

static Span span_of(const Canon *c, const LineEvent *ev, int f) {
    Span s = {c->out.p + ev->start[f], ev->end[f] - ev->start[f]};
    return s;
}

/* ------------------------------------------------------------------ scan_log */

typedef struct {
    Buf flags, emitted, starts, index, seq, logged, has_logged, declared, valid, checksum;
    Buf offsets[3], data[3]; /* stream, event_type, payload */
} Columns;

static void columns_free(Columns *k) {
    Buf *all[] = {&k->flags, &k->emitted, &k->starts, &k->index, &k->seq, &k->logged,
                  &k->has_logged, &k->declared, &k->valid, &k->checksum, &k->offsets[0], &k->offsets[1],
                  &k->offsets[2], &k->data[0], &k->data[1], &k->data[2]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) buf_free(all[i]);
}

static int put_i64(Buf *b, int64_t v) { return buf_put(b, &v, 8); }

static int put_offset(Buf *offsets, const Buf *data) {
    if (data->len > INT32_MAX) return -1;
    int32_t v = (int32_t)data->len;
    return buf_put(offsets, &v, 4);
}

/* Append a decided in-window row; the canonical texts are in c->out. */
static int add_row(Columns *k, const Canon *c, const LineEvent *ev, int64_t index, int valid) {
    const int text_fields[3] = {F_STREAM, F_TYPE, F_PAYLOAD};
    for (int i = 0; i < 3; i++) {
        Span s = span_of(c, ev, text_fields[i]);
        if (text_fields[i] != F_PAYLOAD) { /* the value, without its quotes */
            s.p++;
            s.n -= 2;
        }
        if (buf_put(&k->data[i], s.p, s.n) || put_offset(&k->offsets[i], &k->data[i])) return -1;
    }
    Span sum = span_of(c, ev, F_CHECKSUM);
    uint8_t declared = (uint8_t)ev->declared, has_logged = (uint8_t)ev->has_logged;
    uint8_t ok = (uint8_t)valid;
    if (put_i64(&k->index, index) || put_i64(&k->seq, ev->seq) ||
        put_i64(&k->logged, ev->has_logged ? ev->logged_us : 0) ||
        buf_put(&k->has_logged, &has_logged, 1) || buf_put(&k->declared, &declared, 1) ||
        buf_put(&k->valid, &ok, 1) || buf_put(&k->checksum, sum.p + 1, 64))
        return -1;
    return 0;
}

static PyObject *as_bytes(const Buf *b) {
    return PyBytes_FromStringAndSize(b->len ? (const char *)b->p : "", (Py_ssize_t)b->len);
}

/* Every line of data (split on \n, the last one possibly unterminated):
 *
 *   flags       one byte a line: VALID / INVALID (an in-window row), OUTSIDE (an event
 *               outside [start_us, end_us)), UNDECIDED (Python reads the line)
 *   emitted     int64 a line: emitted_at in microseconds (0 when undecided)
 *   starts      int64 a line: where it starts in data; then one more, len(data)
 *   and, per in-window row, in line order: line index (int64), seq (int64), logged_at
 *   (int64) and whether present (uint8), declared category (uint8: 0 none, 1 + index in
 *   CATEGORIES), checksum valid (uint8), checksum (64 bytes each), and stream,
 *   event_type, payload (RFC 8785 text) as (int32 offsets, data) string buffers.
 */
static PyObject *py_scan_log(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long start_us, end_us;
    Py_ssize_t max_line;
    int max_depth;
    if (!PyArg_ParseTuple(args, "y*LLni", &view, &start_us, &end_us, &max_line, &max_depth))
        return NULL;
    const uint8_t *d = view.buf, *stop = d + view.len;
    Columns k;
    memset(&k, 0, sizeof k);
    Canon c;
    canon_init(&c, max_depth);
    Buf covered = {0};
    int failed = 0;
    for (int i = 0; i < 3 && !failed; i++) failed = put_offset(&k.offsets[i], &k.data[i]);
    int64_t index = 0;
    c.released = PyEval_SaveThread(); /* the loop touches no Python object */
    while (d < stop && !failed) {
        const uint8_t *newline = memchr(d, '\n', (size_t)(stop - d));
        const uint8_t *line_end = newline ? newline : stop;
        int64_t line_start = (int64_t)(d - (const uint8_t *)view.buf);
        size_t n = (size_t)(line_end - d);
        LineEvent ev;
        uint8_t flag = R_UNDECIDED;
        int64_t emitted = 0;
        if ((Py_ssize_t)n <= max_line && read_event(&c, d, n, &ev)) {
            emitted = ev.emitted_us;
            if (emitted < start_us || emitted >= end_us) flag = R_OUTSIDE;
            else {
                int m = digest_matches(&covered, span_of(&c, &ev, F_EMITTED), span_of(&c, &ev, F_TYPE),
                                       span_of(&c, &ev, F_PAYLOAD), ev.seq, span_of(&c, &ev, F_STREAM),
                                       c.out.p + ev.start[F_CHECKSUM] + 1);
                if (m < 0 || add_row(&k, &c, &ev, index, m)) failed = 1;
                flag = m ? R_VALID : R_INVALID;
            }
        }
        if (buf_putc(&k.flags, flag) || put_i64(&k.emitted, emitted) ||
            put_i64(&k.starts, line_start))
            failed = 1;
        index++;
        d = newline ? newline + 1 : stop;
    }
    PyEval_RestoreThread((PyThreadState *)c.released);
    c.released = NULL;
    if (!failed && put_i64(&k.starts, (int64_t)view.len)) failed = 1;
    PyBuffer_Release(&view);
    canon_free(&c);
    buf_free(&covered);
    PyObject *result = NULL;
    if (failed) PyErr_NoMemory();
    else
        result = Py_BuildValue(
            "(NNNNNNNNNN(NN)(NN)(NN))", as_bytes(&k.flags), as_bytes(&k.emitted),
            as_bytes(&k.starts), as_bytes(&k.index),
            as_bytes(&k.seq), as_bytes(&k.logged), as_bytes(&k.has_logged), as_bytes(&k.declared),
            as_bytes(&k.valid), as_bytes(&k.checksum), as_bytes(&k.offsets[0]), as_bytes(&k.data[0]),
            as_bytes(&k.offsets[1]), as_bytes(&k.data[1]), as_bytes(&k.offsets[2]),
            as_bytes(&k.data[2]));
    columns_free(&k);
    return result;
}

/* ------------------------------------------------------------------ verify_columns */

typedef struct {
    Py_buffer offsets, data;
    Py_ssize_t rows;
} StrColumn;

static int get_str_column(PyObject *pair, StrColumn *col, Py_ssize_t n) {
    if (!PyArg_ParseTuple(pair, "y*y*", &col->offsets, &col->data)) return -1;
    const int64_t *o = col->offsets.buf;
    if (col->offsets.len < (Py_ssize_t)((n + 1) * sizeof(int64_t))) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short");
        return -1;
    }
    for (Py_ssize_t i = 0; i <= n; i++) /* monotonic and within the data */
        if (o[i] < 0 || o[i] > col->data.len || (i && o[i] < o[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "offsets out of range");
            return -1;
        }
    return 0;
}

static Span cell(const StrColumn *col, Py_ssize_t i) {
    const int64_t *o = col->offsets.buf;
    Span s = {(const uint8_t *)col->data.buf + o[i], (size_t)(o[i + 1] - o[i])};
    return s;
}

enum { COL_STREAM, COL_TYPE, COL_PAYLOAD, COL_CHECKSUM, NSTR };

/* One flag a row (VALID, INVALID, UNDECIDED) of a Supabase snapshot's columns: each
 * string column as (int64 offsets, data) buffers, seq and emitted_at (microseconds) as
 * int64 buffers. Null cells are the caller's to mark undecided. */
static PyObject *py_verify_columns(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    PyObject *pairs[NSTR];
    Py_buffer seqs, emitted;
    int max_depth;
    if (!PyArg_ParseTuple(args, "nOy*Oy*OOi", &n, &pairs[COL_STREAM], &seqs, &pairs[COL_TYPE],
                          &emitted, &pairs[COL_PAYLOAD], &pairs[COL_CHECKSUM], &max_depth))
        return NULL;
    StrColumn cols[NSTR];
    memset(cols, 0, sizeof cols);
    PyObject *result = NULL;
    int ok = n >= 0;
    for (int i = 0; i < NSTR && ok; i++) ok = !get_str_column(pairs[i], &cols[i], n);
    if (ok && (seqs.len < (Py_ssize_t)(n * 8) || emitted.len < (Py_ssize_t)(n * 8))) {
        PyErr_SetString(PyExc_ValueError, "seq or emitted_at buffer too short");
        ok = 0;
    }
    if (ok && (result = PyBytes_FromStringAndSize(NULL, n))) {
        uint8_t *flags = (uint8_t *)PyBytes_AS_STRING(result);
        const int64_t *seq = seqs.buf, *when = emitted.buf;
        Canon c;
        canon_init(&c, max_depth);
        Buf names = {0}, covered = {0};
        c.released = PyEval_SaveThread(); /* the loop touches no Python object */
        for (Py_ssize_t i = 0; i < n; i++) {
            Span sum = cell(&cols[COL_CHECKSUM], i), payload = cell(&cols[COL_PAYLOAD], i);
            char instant[29];
            flags[i] = R_UNDECIDED;
            if (seq[i] < -MAX_SAFE_INTEGER || seq[i] > MAX_SAFE_INTEGER || sum.n != 64) continue;
            if (!format_instant(when[i], instant)) continue;
            names.len = 0;
            Span stream = cell(&cols[COL_STREAM], i), type = cell(&cols[COL_TYPE], i);
            if (canon_raw_string(&names, stream.p, stream.n)) continue;
            size_t type_at = names.len;
            if (canon_raw_string(&names, type.p, type.n)) continue;
            c.out.len = 0;
            if (canon_text(&c, payload.p, payload.n) || c.out.p[0] != '{') continue;
            Span e = {(const uint8_t *)instant, 29}, s = {names.p, type_at};
            Span t = {names.p + type_at, names.len - type_at}, p = {c.out.p, c.out.len};
            int m = digest_matches(&covered, e, t, p, seq[i], s, sum.p);
            if (m >= 0) flags[i] = (uint8_t)m;
        }
        PyEval_RestoreThread((PyThreadState *)c.released);
        c.released = NULL;
        canon_free(&c);
        buf_free(&names);
        buf_free(&covered);
    }
    for (int i = 0; i < NSTR; i++) {
        if (cols[i].offsets.obj) PyBuffer_Release(&cols[i].offsets);
        if (cols[i].data.obj) PyBuffer_Release(&cols[i].data);
    }
    PyBuffer_Release(&seqs);
    PyBuffer_Release(&emitted);
    return result;
}

/* ------------------------------------------------------------------ small entry points */

/* The number of \n bytes in a buffer (memchr: several times bytes.count's speed). */
static PyObject *py_count_newlines(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    const uint8_t *p = view.buf, *end = p + view.len;
    Py_ssize_t count = 0;
    while (p < end) {
        const uint8_t *newline = memchr(p, '\n', (size_t)(end - p));
        if (!newline) break;
        count++;
        p = newline + 1;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(count);
}

static PyObject *py_canonicalize(PyObject *self, PyObject *args) {
    Py_buffer view;
    int max_depth;
    if (!PyArg_ParseTuple(args, "y*i", &view, &max_depth)) return NULL;
    Canon c;
    canon_init(&c, max_depth);
    int e = canon_text(&c, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (e == J_NOMEM) PyErr_NoMemory();
    else if (e) PyErr_SetString(PyExc_ValueError, canon_reasons[e]);
    else result = as_bytes(&c.out);
    canon_free(&c);
    return result;
}

static PyObject *py_sha256_hex(PyObject *self, PyObject *arg) {
    static const char hex[] = "0123456789abcdef";
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    uint8_t digest[32];
    char text[64];
    sha256_digest(view.buf, (size_t)view.len, digest);
    PyBuffer_Release(&view);
    for (int i = 0; i < 32; i++) {
        text[2 * i] = hex[digest[i] >> 4];
        text[2 * i + 1] = hex[digest[i] & 15];
    }
    return PyUnicode_FromStringAndSize(text, 64);
}

static PyObject *py_sha256_routes(PyObject *self, PyObject *unused) {
    PyObject *names = PyList_New(0);
    for (int r = 0; names && r < SHA_ROUTES; r++) {
        if (!sha256_route_available(r)) continue;
        PyObject *name = PyUnicode_FromString(sha256_route_name(r));
        if (!name || PyList_Append(names, name)) {
            Py_XDECREF(name);
            Py_CLEAR(names);
        } else Py_DECREF(name);
    }
    return names;
}

static PyObject *py_sha256_route(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(sha256_route_name(sha256_route()));
}

static PyObject *py_set_sha256_route(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    for (int r = 0; r < SHA_ROUTES; r++)
        if (!strcmp(name, sha256_route_name(r))) {
            if (sha256_select(r) == 0) Py_RETURN_NONE;
            break;
        }
    PyErr_Format(PyExc_ValueError, "SHA-256 route %R is not available here", arg);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_log", py_scan_log, METH_VARARGS, "flags and Arrow buffers of a block of log lines"},
    {"verify_columns", py_verify_columns, METH_VARARGS, "flags of a snapshot's rows"},
    {"count_newlines", py_count_newlines, METH_O, "the number of newline bytes in a buffer"},
    {"canonicalize", py_canonicalize, METH_VARARGS, "RFC 8785 text of a JSON text"},
    {"sha256_hex", py_sha256_hex, METH_O, "sha256 hex digest by the selected route"},
    {"sha256_routes", py_sha256_routes, METH_NOARGS, "SHA-256 routes available here"},
    {"sha256_route", py_sha256_route, METH_NOARGS, "the SHA-256 route in use"},
    {"set_sha256_route", py_set_sha256_route, METH_O, "select a SHA-256 route by name"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "parity.io.native._jcs",
    .m_doc = "Native RFC 8785 checksum verification.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__jcs(void) {
    for (int i = 0; i < 256; i++) NOT_HEX[i] = !((i >= '0' && i <= '9') || (i >= 'a' && i <= 'f'));
    sha256_probe();
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "INVALID", R_INVALID) || PyModule_AddIntConstant(m, "VALID", R_VALID) ||
        PyModule_AddIntConstant(m, "UNDECIDED", R_UNDECIDED) ||
        PyModule_AddIntConstant(m, "OUTSIDE", R_OUTSIDE)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
