/* The hot loops of the core in C: the batched segment scan's record loop, and a Merkle tree level.

   The batched scan (sidecar/core/verify.py `_batched`): a fast path only.

   `scan_records` walks consecutive record frames of a segment from an offset and, for each one,
   checks what the pure-Python batched scan checks of a run: the frame's length and CRC-32 (zlib),
   the body is exactly canonical JSON of docs/format.md §3 (a strict validator that builds no Python
   object), the five envelope members in their one canonical layout, `v`, `seq` (the next one), `ts`
   (a decimal string, never decreasing), `prev` (the previous leaf hash), and the event's `type` and
   `outcome`. It computes each leaf hash (OpenSSL SHA-256 of 0x00 || body), counts event types and
   collects the subject ids of encrypted field values (§5.2).

   It stops, without consuming the frame, at the first record it cannot vouch for: anything that
   would be a finding, and anything it does not handle (an escape in a key or in a string it extracts,
   deep nesting, a key.rotated or subject.erased record, a withheld record, a kc-enc object inside
   another, too many event types at once). The Python scan then checks that one record itself, so
   every decision and every finding stays with the Python code: this module only ever says "these n
   records are clean, and here is what they contain".

   `canonical(body)` exposes the validator alone (1 canonical, 0 not, -1 not decided) for the
   property test against sidecar/core/canonical.py `parse_canonical`. `hash_pairs(buf)` hashes one
   level of the Merkle tree for sidecar/core/merkle.py (whose Python code keeps the tree's shape). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <string.h>
#include <zlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef unsigned char uchar;

#define OK 0
#define INVALID 1
#define UNSURE 2

#define MAX_DEPTH 200         /* orjson refuses nesting over 254 levels: stay well below, undecided beyond */
#define MAX_FRAME (16u << 20) /* sidecar.core.framing.MAX_FRAME */
#define KIND_RECORD 0x52
#define MAX_TYPES 64   /* distinct event types per call; one more ends the call (the next call starts afresh) */
#define MAX_SUBJECTS 64 /* encrypted values per record; more: the Python scan takes the record */
#define MAX_SAFE 9007199254740991LL

enum { K_NONE, K_STR, K_NUM, K_TRUE, K_FALSE, K_NULL, K_OBJ, K_ARR };

typedef struct {
    int kind;
    const uchar *s; /* K_STR: the raw content between the quotes; K_NUM: the digits */
    Py_ssize_t n;
    int esc;        /* K_STR: the content has an escape */
    int kc;         /* K_OBJ/K_ARR: a kc-enc key somewhere inside */
} Val;

typedef struct {
    const uchar *end;
    int status;
    int record;     /* extract the event's type, outcome and encrypted subjects (depth 1 = the event) */
    Val type, outcome;
    int nsub;
    const uchar *sub[MAX_SUBJECTS];
    Py_ssize_t sublen[MAX_SUBJECTS];
} Ctx;

static EVP_MD *sha256_md;

static const uchar *fail(Ctx *c, int status) {
    if (c->status == OK) c->status = status;
    return NULL;
}

/* One UTF-8 sequence starting at p (p[0] >= 0x80), strictly (RFC 3629: no overlong form, no
   surrogate, nothing above U+10FFFF); the byte after it, or NULL. */
static const uchar *utf8(const uchar *p, const uchar *end) {
    uchar c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (end - p < 2 || (p[1] & 0xC0) != 0x80) return NULL;
        return p + 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return NULL;
        if (c == 0xE0 && p[1] < 0xA0) return NULL; /* overlong */
        if (c == 0xED && p[1] > 0x9F) return NULL; /* a surrogate */
        return p + 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return NULL;
        if (c == 0xF0 && p[1] < 0x90) return NULL; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F) return NULL; /* above U+10FFFF */
        return p + 4;
    }
    return NULL;
}

static int lowhex(uchar c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* Bytes inside a string that need a look: 1 for '"', '\\', a control character or a non-ASCII byte. */
static uchar SPECIAL[256];

/* The first byte at or after q that needs a look (SPECIAL), or end; 16 bytes at a time where SSE2 is. */
static inline const uchar *plain(const uchar *q, const uchar *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)q);
        /* signed: below 0x20 is a control character or (negative) a byte of 0x80 or more */
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                 _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(m);
        if (mask) return q + __builtin_ctz((unsigned)mask);
        q += 16;
    }
#endif
    while (q < end && !SPECIAL[*q]) q++;
    return q;
}

/* An object key at p (the opening quote): ASCII, and without an escape (else not decided); after it, or NULL. */
static inline const uchar *key(Ctx *c, const uchar *p, Val *out) {
    const uchar *q = plain(++p, c->end);
    if (q >= c->end || *q < 0x20 || *q >= 0x80) return fail(c, INVALID); /* keys are ASCII (§3) */
    if (*q == '\\') {
        /* an escape (its order under JCS is left to Python), unless the key goes on to be non-ASCII */
        for (; q < c->end && *q != '"'; q++)
            if (*q >= 0x80) return fail(c, INVALID);
        return fail(c, UNSURE);
    }
    out->kind = K_STR;
    out->s = p;
    out->n = q - p;
    out->esc = 0;
    out->kc = 0;
    return q + 1;
}

/* A string at p (the opening quote) written exactly as §3 writes it; the byte after it, or NULL. */
static const uchar *string(Ctx *c, const uchar *p, Val *out) {
    const uchar *end = c->end;
    const uchar *q = ++p;
    int esc = 0;
    for (;;) {
        q = plain(q, end);
        if (q >= end) return fail(c, INVALID);
        uchar ch = *q;
        if (ch == '"') break;
        if (ch == '\\') {
            esc = 1;
            if (end - q < 2) return fail(c, INVALID);
            uchar e = q[1];
            if (e == '"' || e == '\\' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                q += 2;
                continue;
            }
            /* Only a control character without a short form is written \u00XX (lowercase hex). */
            if (e != 'u' || end - q < 6 || q[2] != '0' || q[3] != '0' || (q[4] != '0' && q[4] != '1') ||
                !lowhex(q[5]))
                return fail(c, INVALID);
            if (q[4] == '0' && (q[5] == '8' || q[5] == '9' || q[5] == 'a' || q[5] == 'c' || q[5] == 'd'))
                return fail(c, INVALID); /* \b \t \n \f \r have short forms */
            q += 6;
            continue;
        }
        if (ch < 0x20) return fail(c, INVALID);
        q = utf8(q, end);
        if (q == NULL) return fail(c, INVALID);
    }
    out->kind = K_STR;
    out->s = p;
    out->n = q - p;
    out->esc = esc;
    out->kc = 0;
    return q + 1;
}

/* A canonical integer at p: -?(0|[1-9][0-9]*) within +/-(2^53-1), not -0, no fraction or exponent. */
static const uchar *number(Ctx *c, const uchar *p, Val *out) {
    const uchar *end = c->end, *q = p;
    int neg = 0;
    if (*q == '-') {
        neg = 1;
        q++;
    }
    const uchar *digits = q;
    if (q >= end || *q < '0' || *q > '9') return fail(c, INVALID);
    if (*q == '0') {
        q++;
        if (neg) return fail(c, INVALID); /* -0 re-encodes as 0 */
    } else {
        long long v = 0;
        while (q < end && *q >= '0' && *q <= '9') {
            if (q - digits >= 16) return fail(c, INVALID); /* 17 digits are beyond 2^53-1 */
            v = v * 10 + (*q - '0');
            q++;
        }
        if (v > MAX_SAFE) return fail(c, INVALID);
    }
    if (q < end && (*q == '.' || *q == 'e' || *q == 'E' || (*q >= '0' && *q <= '9')))
        return fail(c, INVALID); /* a float, or a leading zero */
    out->kind = K_NUM;
    out->s = p;
    out->n = q - p;
    out->esc = 0;
    out->kc = 0;
    return q;
}

static const uchar *value(Ctx *c, const uchar *p, int depth, Val *out);

static int is_key(const Val *k, const char *name, Py_ssize_t n) { return k->n == n && memcmp(k->s, name, n) == 0; }

static const uchar *object(Ctx *c, const uchar *p, int depth, Val *out) {
    const uchar *end = c->end;
    Val k, prev = {K_NONE, NULL, 0, 0, 0}, v, sub = {K_NONE, NULL, 0, 0, 0};
    int has_kc = 0, kc_one = 0, nested = 0;
    if (depth > MAX_DEPTH) return fail(c, UNSURE);
    p++;
    if (p < end && *p == '}') {
        p++;
        goto done;
    }
    for (;;) {
        if (p >= end || *p != '"') return fail(c, INVALID);
        p = key(c, p, &k);
        if (p == NULL) return NULL;
        if (prev.kind == K_STR) {
            Py_ssize_t m = prev.n < k.n ? prev.n : k.n;
            int cmp = memcmp(prev.s, k.s, m);
            if (cmp > 0 || (cmp == 0 && prev.n >= k.n)) return fail(c, INVALID); /* order, or a duplicate */
        }
        prev = k;
        if (p >= end || *p != ':') return fail(c, INVALID);
        p = value(c, p + 1, depth, &v);
        if (p == NULL) return NULL;
        if (c->record) {
            nested |= v.kc;
            if (is_key(&k, "kc-enc", 6)) {
                has_kc = 1;
                kc_one = v.kind == K_TRUE || (v.kind == K_NUM && v.n == 1 && v.s[0] == '1'); /* Python's == 1 */
            } else if (is_key(&k, "sub", 3)) {
                sub = v;
            } else if (is_key(&k, "erased_fields", 13)) {
                return fail(c, UNSURE); /* a withheld record (§5.2): the Python scan counts it */
            }
            if (depth == 1) {
                if (is_key(&k, "type", 4))
                    c->type = v;
                else if (is_key(&k, "outcome", 7))
                    c->outcome = v;
            }
        }
        if (p >= end) return fail(c, INVALID);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}') {
            p++;
            break;
        }
        return fail(c, INVALID);
    }
done:
    if (has_kc) {
        if (nested) return fail(c, UNSURE); /* an encrypted value inside another: Python's walk decides */
        if (kc_one && sub.kind == K_STR) {
            if (sub.esc || c->nsub >= MAX_SUBJECTS) return fail(c, UNSURE);
            c->sub[c->nsub] = sub.s;
            c->sublen[c->nsub] = sub.n;
            c->nsub++;
        }
    }
    out->kind = K_OBJ;
    out->s = NULL;
    out->n = 0;
    out->esc = 0;
    out->kc = has_kc || nested;
    return p;
}

static const uchar *array(Ctx *c, const uchar *p, int depth, Val *out) {
    const uchar *end = c->end;
    Val v;
    int kc = 0;
    if (depth > MAX_DEPTH) return fail(c, UNSURE);
    p++;
    if (p < end && *p == ']') {
        p++;
    } else {
        for (;;) {
            p = value(c, p, depth, &v);
            if (p == NULL) return NULL;
            kc |= v.kc;
            if (p >= end) return fail(c, INVALID);
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == ']') {
                p++;
                break;
            }
            return fail(c, INVALID);
        }
    }
    out->kind = K_ARR;
    out->s = NULL;
    out->n = 0;
    out->esc = 0;
    out->kc = kc;
    return p;
}

static const uchar *literal(Ctx *c, const uchar *p, const char *word, Py_ssize_t n, int kind, Val *out) {
    if (c->end - p < n || memcmp(p, word, n) != 0) return fail(c, INVALID);
    out->kind = kind;
    out->s = p;
    out->n = n;
    out->esc = 0;
    out->kc = 0;
    return p + n;
}

/* A value at p whose container is at `depth` (an object or array here is at depth + 1). */
static const uchar *value(Ctx *c, const uchar *p, int depth, Val *out) {
    if (p >= c->end) return fail(c, INVALID);
    switch (*p) {
    case '{':
        return object(c, p, depth + 1, out);
    case '[':
        return array(c, p, depth + 1, out);
    case '"':
        return string(c, p, out);
    case 't':
        return literal(c, p, "true", 4, K_TRUE, out);
    case 'f':
        return literal(c, p, "false", 5, K_FALSE, out);
    case 'n':
        return literal(c, p, "null", 4, K_NULL, out);
    default:
        return number(c, p, out);
    }
}

static PyObject *canonical(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    const uchar *p = buf.buf;
    Ctx c;
    memset(&c, 0, sizeof c);
    c.end = p + buf.len;
    Val v;
    const uchar *q = value(&c, p, -1, &v);
    int status = q == NULL ? c.status : (q == c.end ? OK : INVALID);
    PyBuffer_Release(&buf);
    return PyLong_FromLong(status == OK ? 1 : status == INVALID ? 0 : -1);
}

/* The fixed bytes between the envelope's members (keys sorted: event, prev, seq, ts, v). */
static const char PREFIX[] = "{\"event\":";
static const char PREV[] = ",\"prev\":\"";
static const char SEQ[] = "\",\"seq\":";
static const char TS[] = ",\"ts\":\"";
static const char V[] = "\",\"v\":";

static int match(const uchar **p, const uchar *end, const char *lit, Py_ssize_t n) {
    if (end - *p < n || memcmp(*p, lit, n) != 0) return 0;
    *p += n;
    return 1;
}

/* A canonical non-negative integer of at most `maxdigits` digits and at most `max`, or -1 on anything else. */
static long long uint_at(const uchar **pp, const uchar *end, int maxdigits, unsigned long long max) {
    const uchar *p = *pp, *start = p;
    unsigned long long v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (p - start >= maxdigits) return -1;
        v = v * 10 + (unsigned long long)(*p - '0');
        p++;
    }
    if (p == start || (*start == '0' && p - start > 1) || v > max) return -1;
    *pp = p;
    return (long long)v;
}

static int unhex(uchar c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

typedef struct {
    const uchar *s;
    Py_ssize_t n;
    Py_ssize_t count;
} TypeCount;

/* One record body: 1 if clean (type, subjects and ts filled in), 0 if the Python scan must decide. */
static int record(Ctx *c, const uchar *body, Py_ssize_t len, long version, long long seq, const uchar *prev,
                  long long *ts) {
    const uchar *p = body, *end = body + len;
    Val ev;
    c->end = end;
    c->status = OK;
    c->record = 1;
    c->nsub = 0;
    c->type.kind = K_NONE;
    c->outcome.kind = K_NONE;
    if (!match(&p, end, PREFIX, sizeof PREFIX - 1) || p >= end || *p != '{') return 0;
    p = object(c, p, 1, &ev);
    if (p == NULL || !match(&p, end, PREV, sizeof PREV - 1) || end - p < 64) return 0;
    for (int i = 0; i < 32; i++) {
        if (!lowhex(p[2 * i]) || !lowhex(p[2 * i + 1])) return 0;
        if (((unhex(p[2 * i]) << 4) | unhex(p[2 * i + 1])) != prev[i]) return 0; /* prev: the record before */
    }
    p += 64;
    if (!match(&p, end, SEQ, sizeof SEQ - 1) || uint_at(&p, end, 16, MAX_SAFE) != seq) return 0;
    if (!match(&p, end, TS, sizeof TS - 1)) return 0;
    *ts = uint_at(&p, end, 19, 9223372036854775807ULL);
    if (*ts < 0 || !match(&p, end, V, sizeof V - 1) || uint_at(&p, end, 16, MAX_SAFE) != version) return 0;
    if (end - p != 1 || *p != '}') return 0;
    if (version >= 2 ? c->type.kind != K_STR || c->outcome.kind != K_STR
                     : c->type.kind != K_STR && c->type.kind != K_NONE)
        return 0;
    if (c->type.kind == K_STR) {
        if (c->type.esc) return 0;
        if (is_key(&c->type, "key.rotated", 11) || is_key(&c->type, "subject.erased", 14)) return 0;
    }
    return 1;
}

static PyObject *scan_records(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, limit;
    long version;
    long long seq, last_ts;
    const uchar *prev_in;
    Py_ssize_t prev_len;
    if (!PyArg_ParseTuple(args, "y*nlLy#Ln", &buf, &pos, &version, &seq, &prev_in, &prev_len, &last_ts, &limit))
        return NULL;
    const uchar *data = buf.buf;
    Py_ssize_t end = buf.len;
    PyObject *result = NULL, *types = NULL, *subjects = NULL, *leaves = NULL;
    uchar *out = NULL;
    TypeCount tc[MAX_TYPES];
    int ntypes = 0;
    Py_ssize_t n = 0;
    long long first_ts = -1;
    uchar prev[32];
    EVP_MD_CTX *md = NULL;
    Ctx *c = PyMem_Malloc(sizeof(Ctx));
    subjects = PyList_New(0);
    if (c == NULL || subjects == NULL) goto error;
    if (prev_len != 32 || pos < 0 || limit < 1 || seq < 0) goto finish; /* nothing vouched for */
    memcpy(prev, prev_in, 32);
    out = PyMem_Malloc((size_t)limit * 32);
    md = EVP_MD_CTX_new();
    if (out == NULL || md == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    while (n < limit && end - pos >= 9 && data[pos] == KIND_RECORD) {
        uint32_t length = ((uint32_t)data[pos + 1] << 24) | ((uint32_t)data[pos + 2] << 16) |
                          ((uint32_t)data[pos + 3] << 8) | data[pos + 4];
        if (length > MAX_FRAME || (Py_ssize_t)length > end - pos - 9) break;
        const uchar *body = data + pos + 5;
        const uchar *crc = body + length;
        uint32_t want = ((uint32_t)crc[0] << 24) | ((uint32_t)crc[1] << 16) | ((uint32_t)crc[2] << 8) | crc[3];
        if (crc32(0L, data + pos, (uInt)length + 5) != want) break;
        long long ts;
        if (!record(c, body, length, version, seq + n, prev, &ts) || ts < last_ts) break;
        int t = -1;
        if (c->type.kind == K_STR) {
            for (t = 0; t < ntypes; t++)
                if (tc[t].n == c->type.n && memcmp(tc[t].s, c->type.s, c->type.n) == 0) break;
            if (t == ntypes) {
                if (ntypes == MAX_TYPES) break;
                tc[ntypes].s = c->type.s;
                tc[ntypes].n = c->type.n;
                tc[ntypes].count = 0;
                ntypes++;
            }
        } else {
            /* kc-ledger/1 without a type counts as "" (Python's event.get("type", "")) */
            for (t = 0; t < ntypes; t++)
                if (tc[t].n == 0) break;
            if (t == ntypes) {
                if (ntypes == MAX_TYPES) break;
                tc[ntypes].s = (const uchar *)"";
                tc[ntypes].n = 0;
                tc[ntypes].count = 0;
                ntypes++;
            }
        }
        if (c->nsub) {
            PyObject *names = PyList_New(c->nsub), *set;
            if (names == NULL) goto error;
            for (int i = 0; i < c->nsub; i++) {
                PyObject *s = PyUnicode_DecodeUTF8((const char *)c->sub[i], c->sublen[i], "strict");
                if (s == NULL) {
                    Py_DECREF(names);
                    goto error;
                }
                PyList_SET_ITEM(names, i, s);
            }
            set = PyFrozenSet_New(names);
            Py_DECREF(names);
            if (set == NULL || PyList_Append(subjects, set) < 0) {
                Py_XDECREF(set);
                goto error;
            }
            Py_DECREF(set);
        }
        tc[t].count++;
        static const uchar zero = 0;
        unsigned int mdlen;
        uchar *leaf = out + 32 * n;
        if (!EVP_DigestInit_ex2(md, sha256_md, NULL) || !EVP_DigestUpdate(md, &zero, 1) ||
            !EVP_DigestUpdate(md, body, length) || !EVP_DigestFinal_ex(md, leaf, &mdlen)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
            goto error;
        }
        memcpy(prev, leaf, 32);
        if (first_ts < 0) first_ts = ts;
        last_ts = ts;
        n++;
        pos += (Py_ssize_t)length + 9;
    }
finish:
    types = PyDict_New();
    if (types == NULL) goto error;
    for (int t = 0; t < ntypes; t++) {
        PyObject *k = PyUnicode_DecodeUTF8((const char *)tc[t].s, tc[t].n, "strict");
        PyObject *v = PyLong_FromSsize_t(tc[t].count);
        if (k == NULL || v == NULL || PyDict_SetItem(types, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            goto error;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    leaves = PyBytes_FromStringAndSize((const char *)out, 32 * n);
    if (leaves == NULL) goto error;
    result = Py_BuildValue("(nnOLLOO)", pos, n, leaves, first_ts, last_ts, types, subjects);
error:
    Py_XDECREF(leaves);
    Py_XDECREF(types);
    Py_XDECREF(subjects);
    EVP_MD_CTX_free(md);
    PyMem_Free(out);
    PyMem_Free(c);
    PyBuffer_Release(&buf);
    return result;
}

/* One level of the Merkle tree (RFC 9162 §2.1.1): SHA-256(0x01 || left || right) of each 64-byte pair. */
static PyObject *hash_pairs(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    PyObject *result = NULL;
    EVP_MD_CTX *md = NULL;
    if (buf.len % 64) {
        PyErr_SetString(PyExc_ValueError, "hash_pairs takes a multiple of 64 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, buf.len / 2);
    md = EVP_MD_CTX_new();
    if (result == NULL || md == NULL) {
        if (md == NULL) PyErr_NoMemory();
        Py_CLEAR(result);
        goto done;
    }
    static const uchar one = 1;
    const uchar *in = buf.buf;
    uchar *out = (uchar *)PyBytes_AS_STRING(result);
    unsigned int mdlen;
    for (Py_ssize_t i = 0; i < buf.len / 64; i++) {
        if (!EVP_DigestInit_ex2(md, sha256_md, NULL) || !EVP_DigestUpdate(md, &one, 1) ||
            !EVP_DigestUpdate(md, in + 64 * i, 64) || !EVP_DigestFinal_ex(md, out + 32 * i, &mdlen)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    EVP_MD_CTX_free(md);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"canonical", canonical, METH_VARARGS,
     "canonical(body) -> 1 if body is exactly canonical JSON of docs/format.md §3, 0 if not, -1 if not decided."},
    {"scan_records", scan_records, METH_VARARGS,
     "scan_records(data, pos, version, seq, prev, last_ts, limit) -> (pos, n, leaves, first_ts, last_ts, "
     "types, subjects): the clean record frames from pos on (see the module source)."},
    {"hash_pairs", hash_pairs, METH_VARARGS,
     "hash_pairs(buf) -> the node hash SHA-256(0x01 || pair) of each 64-byte pair in buf, concatenated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "sidecar.core._native",
                                    "The batched scan's hot loop in C (a fast path; Python decides).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    for (int i = 0; i < 256; i++) SPECIAL[i] = i < 0x20 || i == '"' || i == '\\' || i >= 0x80;
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module);
}
