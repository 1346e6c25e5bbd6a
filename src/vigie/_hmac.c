/*
 * vigie._hmac: HMAC-SHA256 pseudonyms over whole Arrow buffers, in C with OpenSSL.
 *
 * The key's inner and outer pad states are hashed once; each value then costs two
 * SHA-256 compressions (OpenSSL uses the CPU's SHA extensions where present). The GIL is
 * released while hashing, so two threads use two cores. Each output is the first 16 bytes
 * of HMAC-SHA256(key, prefix || value), written to `out` at 16 * i.
 *
 * Checked bit for bit against Python's hmac by vigie.policy.hmac_engine.self_test.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} Pads;

static void pads_init(Pads *p, const unsigned char *key, size_t keylen) {
    unsigned char k[64], ipad[64], opad[64];
    memset(k, 0, sizeof k);
    if (keylen > 64) {
        SHA256(key, keylen, k);
    } else {
        memcpy(k, key, keylen);
    }
    for (int i = 0; i < 64; i++) {
        ipad[i] = k[i] ^ 0x36;
        opad[i] = k[i] ^ 0x5c;
    }
    SHA256_Init(&p->inner);
    SHA256_Update(&p->inner, ipad, 64);
    SHA256_Init(&p->outer);
    SHA256_Update(&p->outer, opad, 64);
}

static inline void mac16(const Pads *p, const unsigned char *prefix, size_t plen,
                         const unsigned char *msg, size_t len, unsigned char *out) {
    SHA256_CTX c;
    unsigned char d[32];
    c = p->inner;
    SHA256_Update(&c, prefix, plen);
    SHA256_Update(&c, msg, len);
    SHA256_Final(d, &c);
    c = p->outer;
    SHA256_Update(&c, d, 32);
    SHA256_Final(d, &c);
    memcpy(out, d, 16);
}

/* Decimal text of v (as Python's str(int)); returns its length. */
static inline int format_int64(int64_t v, char *buf) {
    char tmp[24];
    int n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + (u % 10));
        u /= 10;
    } while (u);
    if (v < 0) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}

/* hmac16_int64(key, prefix, values, out): values an int64 buffer of n items. */
static PyObject *hmac16_int64(PyObject *self, PyObject *args) {
    Py_buffer key, prefix, values, out;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &key, &prefix, &values, &out)) return NULL;
    Py_ssize_t n = values.len / 8;
    if (out.len < n * 16) {
        PyBuffer_Release(&key); PyBuffer_Release(&prefix);
        PyBuffer_Release(&values); PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "output buffer too small");
        return NULL;
    }
    Pads pads;
    pads_init(&pads, key.buf, (size_t)key.len);
    const int64_t *v = values.buf;
    unsigned char *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    char text[24];
    for (Py_ssize_t i = 0; i < n; i++) {
        int len = format_int64(v[i], text);
        mac16(&pads, prefix.buf, (size_t)prefix.len, (unsigned char *)text, (size_t)len, o + 16 * i);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&key); PyBuffer_Release(&prefix);
    PyBuffer_Release(&values); PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* hmac16_utf8(key, prefix, offsets, data, wide, out): Arrow string (int32 offsets) or
 * large_string (int64 offsets, wide=1) of n = len(offsets) - 1 items. */
static PyObject *hmac16_utf8(PyObject *self, PyObject *args) {
    Py_buffer key, prefix, offsets, data, out;
    int wide;
    if (!PyArg_ParseTuple(args, "y*y*y*y*pw*", &key, &prefix, &offsets, &data, &wide, &out))
        return NULL;
    Py_ssize_t width = wide ? 8 : 4;
    Py_ssize_t n = offsets.len / width - 1;
    int bad = n < 0 || out.len < n * 16;
    if (!bad) {
        Pads pads;
        pads_init(&pads, key.buf, (size_t)key.len);
        const unsigned char *d = data.buf;
        unsigned char *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t a, b;
            if (wide) {
                a = ((const int64_t *)offsets.buf)[i];
                b = ((const int64_t *)offsets.buf)[i + 1];
            } else {
                a = ((const int32_t *)offsets.buf)[i];
                b = ((const int32_t *)offsets.buf)[i + 1];
            }
            if (a < 0 || b < a || b > data.len) { bad = 1; break; }
            mac16(&pads, prefix.buf, (size_t)prefix.len, d + a, (size_t)(b - a), o + 16 * i);
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&key); PyBuffer_Release(&prefix); PyBuffer_Release(&offsets);
    PyBuffer_Release(&data); PyBuffer_Release(&out);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "inconsistent string buffers or output too small");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Parse an IPv4 address "a.b.c.d" strictly (decimal octets 0-255, 1-3 digits);
 * returns the length of "a.b.c." (the prefix kept) or -1. */
static inline int ipv4_prefix_len(const unsigned char *s, int64_t n) {
    int dots = 0, digits = 0, value = 0, keep = -1;
    if (n > 15) return -1;
    for (int64_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= '0' && c <= '9') {
            if (++digits > 3) return -1;
            value = value * 10 + (c - '0');
            if (value > 255) return -1;
        } else if (c == '.') {
            if (digits == 0 || ++dots > 3) return -1;
            digits = 0;
            value = 0;
            if (dots == 3) keep = (int)i + 1;
        } else {
            return -1;
        }
    }
    return (dots == 3 && digits > 0) ? keep : -1;
}

static inline int hex_lower(unsigned char c) {
    if (c >= '0' && c <= '9') return c;
    if (c >= 'a' && c <= 'f') return c;
    if (c >= 'A' && c <= 'F') return c + ('a' - 'A');
    return -1;
}

/* Parse an IPv6 address in text (hex groups of 1-4 digits, at most one "::", eight groups
 * in all, no embedded IPv4) and write its first three groups as written (lowercased),
 * "::" expanded with "0" groups, followed by "::/48". Returns the length written or -1. */
static inline int ipv6_prefix48(const unsigned char *s, int64_t n, unsigned char *out) {
    /* groups as (start, length) in s; head before "::", tail after */
    int64_t gs[8], gl[8];
    int groups = 0, gap = -1; /* gap: number of groups before "::" */
    int64_t i = 0;
    if (n < 2 || n > 39) return -1;
    if (s[0] == ':') {
        if (s[1] != ':') return -1;
        gap = 0;
        i = 2;
        if (i == n) goto expand; /* "::" */
    }
    for (;;) {
        int64_t a = i;
        while (i < n && hex_lower(s[i]) >= 0) i++;
        if (i == a || i - a > 4 || groups == 8) return -1;
        gs[groups] = a; gl[groups] = i - a; groups++;
        if (i == n) break;
        if (s[i] != ':') return -1;
        i++;
        if (i < n && s[i] == ':') {
            if (gap >= 0) return -1;
            gap = groups;
            i++;
            if (i == n) break;
        } else if (i == n) {
            return -1; /* trailing single ':' */
        }
    }
expand:
    if (gap < 0 && groups != 8) return -1;
    if (gap >= 0 && groups > 7) return -1;
    int pos = 0;
    for (int k = 0; k < 3; k++) {
        if (k) out[pos++] = ':';
        int src; /* index into the written groups, or -1 for a zero group of the gap */
        if (gap < 0 || k < gap) src = k;
        else if (k < gap + (8 - groups)) src = -1;
        else src = k - (8 - groups);
        if (src < 0) { out[pos++] = '0'; continue; }
        for (int64_t j = 0; j < gl[src]; j++) out[pos++] = (unsigned char)hex_lower(s[gs[src] + j]);
    }
    memcpy(out + pos, "::/48", 5);
    return pos + 5;
}

/* ip_prefix(offsets, data, wide) -> (offsets: bytes, data: bytes, valid: bytes)
 * "76.63.132.231" -> "76.63.132.0/24", "2601:0db8:85a3::7334" -> "2601:0db8:85a3::/48";
 * anything else -> invalid (null). int32 offsets out. */
static PyObject *ip_prefix(PyObject *self, PyObject *args) {
    Py_buffer offsets, data;
    int wide;
    if (!PyArg_ParseTuple(args, "y*y*p", &offsets, &data, &wide)) return NULL;
    Py_ssize_t width = wide ? 8 : 4;
    Py_ssize_t n = offsets.len / width - 1;
    PyObject *out_off = NULL, *out_data = NULL, *out_valid = NULL, *result = NULL;
    if (n < 0) n = 0;
    out_off = PyBytes_FromStringAndSize(NULL, (n + 1) * 4);
    out_data = PyBytes_FromStringAndSize(NULL, n * 20 + 1);
    out_valid = PyBytes_FromStringAndSize(NULL, n);
    if (!out_off || !out_data || !out_valid) goto done;
    int32_t *oo = (int32_t *)PyBytes_AS_STRING(out_off);
    unsigned char *od = (unsigned char *)PyBytes_AS_STRING(out_data);
    unsigned char *ov = (unsigned char *)PyBytes_AS_STRING(out_valid);
    const unsigned char *d = data.buf;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    int32_t pos = 0;
    oo[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t a = wide ? ((const int64_t *)offsets.buf)[i] : ((const int32_t *)offsets.buf)[i];
        int64_t b = wide ? ((const int64_t *)offsets.buf)[i + 1]
                         : ((const int32_t *)offsets.buf)[i + 1];
        if (a < 0 || b < a || b > data.len) { bad = 1; break; }
        int written = -1;
        int keep = ipv4_prefix_len(d + a, b - a);
        if (keep > 0) {
            memcpy(od + pos, d + a, (size_t)keep);
            memcpy(od + pos + keep, "0/24", 4);
            written = keep + 4;
        } else if (memchr(d + a, ':', (size_t)(b - a))) {
            written = ipv6_prefix48(d + a, b - a, od + pos);
        }
        ov[i] = written > 0;
        if (written > 0) pos += written;
        oo[i + 1] = pos;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "inconsistent string buffers");
        goto done;
    }
    result = Py_BuildValue("(OOO)", out_off, out_data, out_valid);
done:
    Py_XDECREF(out_off); Py_XDECREF(out_data); Py_XDECREF(out_valid);
    PyBuffer_Release(&offsets); PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"ip_prefix", ip_prefix, METH_VARARGS, "IPv4 addresses to their /24, IPv6 to their /48."},
    {"hmac16_int64", hmac16_int64, METH_VARARGS, "HMAC-SHA256[:16] of prefix || decimal(v)."},
    {"hmac16_utf8", hmac16_utf8, METH_VARARGS, "HMAC-SHA256[:16] of prefix || s."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hmac", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hmac(void) { return PyModule_Create(&module); }
