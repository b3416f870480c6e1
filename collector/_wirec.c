/* Native walk of serialised OTLP spans for collector/genai.py's wire path (see collector/wire.py).
 *
 * span_values(data, spans, keys, fallback): for each span range of a laid-out trace request, the Python
 * values of the span's own attributes whose keys are in `keys`, as a dict per span. The same result as
 * genai._walk_values over every span (a full protobuf walk: a key quoted inside a string value is not an
 * attribute), at C speed: a Python walk of every attribute costs ~8 µs per LLM span, this ~0.5 µs (with the
 * dicts it fills).
 *
 * Values: string (UTF-8, undecodable bytes replaced), bool, int (int64), double; an empty AnyValue is None;
 * any other AnyValue (bytes, array, kvlist, or more than one field) goes to `fallback(data, offset)`, with
 * the offset of the AnyValue's length prefix, which decodes it in Python. Malformed bytes end the walk of
 * that span (or leave that attribute out) without an error: the receiver's parse has validated the request
 * already.
 *
 * span_fields(data, spans): the fields tail sampling reads of every span (trace id, status code, start and
 * end time), as four lists.
 *
 * scope_layout(data, start, end, spans): the byte ranges of the spans of one ScopeSpans (collector/wire.py's
 * layout).
 *
 * length_fields(data, start, end): the length-delimited fields of one message (genai.wire_fields).
 *
 * render_spans(data, spans, first, n, extra): the spans of one scope serialised again with attributes
 * appended (collector/wire.py's render when nothing else changed).
 *
 * The module is optional: without it (no C compiler at install), collector/genai.py and collector/wire.py
 * do the same in Python (the values from a Hyperscan scan for the wanted keys' encodings).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_KEY_LEN 128 /* keys of this length or longer share one bucket */

typedef struct {
    const char *bytes;
    Py_ssize_t len;
    PyObject *key; /* borrowed from the keys tuple */
} Key;

typedef struct {
    Key *keys;
    Py_ssize_t n;
    int start[MAX_KEY_LEN + 2]; /* keys sorted by length: [start[len], start[len + 1]) have that length */
} Table;

static int read_varint(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    Py_ssize_t p = *pos;
    while (p < end && shift < 64) {
        unsigned char c = b[p++];
        v |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80) {
            *pos = p;
            *out = v;
            return 1;
        }
        shift += 7;
    }
    return 0;
}

/* Skip the value of a field of wire type `wt` at *pos; 0 on malformed bytes. */
static int skip_field(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end, unsigned wt) {
    uint64_t v;
    switch (wt) {
    case 0:
        return read_varint(b, pos, end, &v);
    case 1:
        if (end - *pos < 8) return 0;
        *pos += 8;
        return 1;
    case 2:
        if (!read_varint(b, pos, end, &v) || v > (uint64_t)(end - *pos)) return 0;
        *pos += (Py_ssize_t)v;
        return 1;
    case 5:
        if (end - *pos < 4) return 0;
        *pos += 4;
        return 1;
    default: /* groups (3, 4) are not in OTLP */
        return 0;
    }
}

static int key_len_bucket(Py_ssize_t len) { return len < MAX_KEY_LEN ? (int)len : MAX_KEY_LEN; }

static int cmp_keys(const void *a, const void *b) {
    int la = key_len_bucket(((const Key *)a)->len), lb = key_len_bucket(((const Key *)b)->len);
    return (la > lb) - (la < lb);
}

static int build_table(PyObject *keys, Table *t) {
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    t->n = n;
    t->keys = PyMem_Malloc(sizeof(Key) * (size_t)(n ? n : 1));
    if (t->keys == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(keys, i);
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "span_values: keys must be str");
            return 0;
        }
        t->keys[i].bytes = PyUnicode_AsUTF8AndSize(k, &t->keys[i].len);
        if (t->keys[i].bytes == NULL) return 0;
        t->keys[i].key = k;
    }
    qsort(t->keys, (size_t)n, sizeof(Key), cmp_keys);
    Py_ssize_t j = 0;
    for (int len = 0; len <= MAX_KEY_LEN; len++) {
        t->start[len] = (int)j;
        while (j < n && key_len_bucket(t->keys[j].len) == len) j++;
    }
    t->start[MAX_KEY_LEN + 1] = (int)j;
    return 1;
}

static PyObject *find_key(const Table *t, const unsigned char *k, Py_ssize_t len) {
    int bucket = key_len_bucket(len);
    for (int i = t->start[bucket]; i < t->start[bucket + 1]; i++) {
        const Key *e = &t->keys[i];
        if (e->len == len && memcmp(e->bytes, k, (size_t)len) == 0) return e->key;
    }
    return NULL;
}

/* Short strings decoded in one call, by their bytes: the spans of a request repeat the same models, tenants
 * and users, and one str object for each saves the decode, the allocation, and the hash at each lookup. */
#define INTERN_SLOTS 512
#define INTERN_MAX_LEN 64

typedef struct {
    PyObject *str;
    Py_ssize_t at, len; /* where in the data its bytes are */
} Interned;

static PyObject *decode_str(const unsigned char *b, Py_ssize_t at, Py_ssize_t len, Interned *tbl) {
    if (len > INTERN_MAX_LEN) return PyUnicode_DecodeUTF8((const char *)b + at, len, "replace");
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t k = 0; k < len; k++) h = (h ^ b[at + k]) * 16777619u;
    Interned *slot = &tbl[h & (INTERN_SLOTS - 1)];
    if (slot->str != NULL && slot->len == len && memcmp(b + slot->at, b + at, (size_t)len) == 0) {
        Py_INCREF(slot->str);
        return slot->str;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)b + at, len, "replace");
    if (s != NULL) {
        Py_XDECREF(slot->str);
        Py_INCREF(s);
        slot->str = s;
        slot->at = at;
        slot->len = len;
    }
    return s;
}

static void free_interned(Interned *tbl) {
    for (int k = 0; k < INTERN_SLOTS; k++) Py_XDECREF(tbl[k].str);
    PyMem_Free(tbl);
}

/* The Python value of the AnyValue in b[vs:ve] (length prefix at `prefix`); a new reference, or NULL with
 * an error set. */
static PyObject *decode_any(const unsigned char *b, Py_ssize_t prefix, Py_ssize_t vs, Py_ssize_t ve,
                            PyObject *data, PyObject *fallback, Interned *tbl) {
    if (vs == ve) Py_RETURN_NONE;
    Py_ssize_t pos = vs;
    uint64_t tag;
    if (read_varint(b, &pos, ve, &tag)) {
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        Py_ssize_t after = pos;
        if (skip_field(b, &after, ve, wt) && after == ve) { /* exactly one field */
            uint64_t v;
            Py_ssize_t p = pos;
            if (field == 1 && wt == 2 && read_varint(b, &p, ve, &v)) return decode_str(b, p, (Py_ssize_t)v, tbl);
            if (field == 2 && wt == 0 && read_varint(b, &p, ve, &v)) return PyBool_FromLong(v != 0);
            if (field == 3 && wt == 0 && read_varint(b, &p, ve, &v)) return PyLong_FromLongLong((long long)(int64_t)v);
            if (field == 4 && wt == 1) return PyFloat_FromDouble(PyFloat_Unpack8((const char *)b + p, 1));
        }
    }
    return PyObject_CallFunction(fallback, "On", data, prefix);
}

/* Store the wanted attribute encoded in b[s:e] (a KeyValue) in `out`; 0 with an error set on failure. */
static int take_attribute(const unsigned char *b, Py_ssize_t s, Py_ssize_t e, const Table *t, PyObject *out,
                          PyObject *data, PyObject *fallback, Interned *tbl) {
    Py_ssize_t pos = s, ks = -1, kl = 0, prefix = -1, vs = 0, ve = 0;
    while (pos < e) {
        uint64_t tag, len;
        if (!read_varint(b, &pos, e, &tag)) return 1;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (wt == 2 && (field == 1 || field == 2)) {
            Py_ssize_t at = pos;
            if (!read_varint(b, &pos, e, &len) || len > (uint64_t)(e - pos)) return 1;
            if (field == 1) {
                ks = pos;
                kl = (Py_ssize_t)len;
            } else {
                prefix = at;
                vs = pos;
                ve = pos + (Py_ssize_t)len;
            }
            pos += (Py_ssize_t)len;
        } else if (!skip_field(b, &pos, e, wt)) {
            return 1;
        }
    }
    if (ks < 0) return 1;
    PyObject *key = find_key(t, b + ks, kl);
    if (key == NULL) return 1;
    PyObject *v;
    if (prefix < 0) { /* no value field: an empty AnyValue */
        v = Py_None;
        Py_INCREF(v);
    } else {
        v = decode_any(b, prefix, vs, ve, data, fallback, tbl);
        if (v == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) return 0;
            PyErr_Clear(); /* a value the fallback cannot read (malformed bytes): the attribute is left out */
            return 1;
        }
    }
    int rc = PyDict_SetItem(out, key, v);
    Py_DECREF(v);
    return rc == 0;
}

/* (tag, start, end) of span `i` of the list `spans`, checked to lie in order inside data of `size` bytes;
 * 0 with an error set when it does not. */
static int span_range(PyObject *spans, Py_ssize_t i, Py_ssize_t size, Py_ssize_t r[3]) {
    PyObject *rg = PyList_GET_ITEM(spans, i);
    if (!PyTuple_Check(rg) || PyTuple_GET_SIZE(rg) != 3) {
        PyErr_SetString(PyExc_TypeError, "spans must be (tag, start, end) tuples");
        return 0;
    }
    for (int j = 0; j < 3; j++) r[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(rg, j));
    if (PyErr_Occurred()) return 0;
    if (r[0] < 0 || r[0] > r[1] || r[1] > r[2] || r[2] > size) {
        PyErr_SetString(PyExc_ValueError, "span range outside the data");
        return 0;
    }
    return 1;
}

static PyObject *span_values(PyObject *self, PyObject *args) {
    PyObject *data, *spans, *keys, *fallback;
    if (!PyArg_ParseTuple(args, "SO!O!O:span_values", &data, &PyList_Type, &spans, &PyTuple_Type, &keys, &fallback))
        return NULL;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Table t;
    if (!build_table(keys, &t)) {
        PyMem_Free(t.keys);
        return NULL;
    }
    Interned *tbl = PyMem_Calloc(INTERN_SLOTS, sizeof(Interned));
    if (tbl == NULL) {
        PyMem_Free(t.keys);
        return PyErr_NoMemory();
    }
    Py_ssize_t n = PyList_GET_SIZE(spans);
    PyObject *result = PyList_New(n);
    if (result == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyDict_New();
        if (d == NULL) goto fail;
        PyList_SET_ITEM(result, i, d);
        Py_ssize_t r[3];
        if (!span_range(spans, i, size, r)) goto fail;
        Py_ssize_t pos = r[1], e = r[2];
        while (pos < e) {
            uint64_t tag, len;
            if (!read_varint(b, &pos, e, &tag)) break;
            unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
            if (field == 9 && wt == 2) {
                if (!read_varint(b, &pos, e, &len) || len > (uint64_t)(e - pos)) break;
                if (!take_attribute(b, pos, pos + (Py_ssize_t)len, &t, d, data, fallback, tbl)) goto fail;
                pos += (Py_ssize_t)len;
            } else if (!skip_field(b, &pos, e, wt)) {
                break;
            }
        }
    }
    free_interned(tbl);
    PyMem_Free(t.keys);
    return result;
fail:
    free_interned(tbl);
    PyMem_Free(t.keys);
    Py_XDECREF(result);
    return NULL;
}

/* The code of a Status message in b[s:e] (field 3), the last one counting; 0 when absent. */
static uint64_t status_code(const unsigned char *b, Py_ssize_t s, Py_ssize_t e, uint64_t code) {
    Py_ssize_t pos = s;
    while (pos < e) {
        uint64_t tag, v;
        if (!read_varint(b, &pos, e, &tag)) break;
        if (tag == ((3 << 3) | 0)) {
            if (!read_varint(b, &pos, e, &v)) break;
            code = v;
        } else if (!skip_field(b, &pos, e, (unsigned)(tag & 7))) {
            break;
        }
    }
    return code;
}

static PyObject *span_fields(PyObject *self, PyObject *args) {
    PyObject *data, *spans;
    if (!PyArg_ParseTuple(args, "SO!:span_fields", &data, &PyList_Type, &spans)) return NULL;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_ssize_t n = PyList_GET_SIZE(spans);
    PyObject *tids = PyList_New(n), *codes = PyList_New(n), *starts = PyList_New(n), *ends = PyList_New(n);
    if (tids == NULL || codes == NULL || starts == NULL || ends == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t r[3];
        if (!span_range(spans, i, size, r)) goto fail;
        Py_ssize_t pos = r[1], e = r[2], tid_at = 0, tid_len = 0;
        uint64_t code = 0, start = 0, end = 0;
        while (pos < e) {
            uint64_t tag, len;
            if (!read_varint(b, &pos, e, &tag)) break;
            unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
            if (wt == 2 && (field == 1 || field == 15)) {
                if (!read_varint(b, &pos, e, &len) || len > (uint64_t)(e - pos)) break;
                if (field == 1) {
                    tid_at = pos;
                    tid_len = (Py_ssize_t)len;
                } else {
                    code = status_code(b, pos, pos + (Py_ssize_t)len, code);
                }
                pos += (Py_ssize_t)len;
            } else if (wt == 1 && (field == 7 || field == 8) && e - pos >= 8) {
                uint64_t v = 0;
                for (int k = 7; k >= 0; k--) v = (v << 8) | b[pos + k];
                if (field == 7)
                    start = v;
                else
                    end = v;
                pos += 8;
            } else if (!skip_field(b, &pos, e, wt)) {
                break;
            }
        }
        PyObject *tid = PyBytes_FromStringAndSize((const char *)b + tid_at, tid_len);
        PyObject *c = PyLong_FromLongLong((long long)(int32_t)code); /* an enum: int32 */
        PyObject *st = PyLong_FromUnsignedLongLong(start), *en = PyLong_FromUnsignedLongLong(end);
        PyList_SET_ITEM(tids, i, tid);
        PyList_SET_ITEM(codes, i, c);
        PyList_SET_ITEM(starts, i, st);
        PyList_SET_ITEM(ends, i, en);
        if (tid == NULL || c == NULL || st == NULL || en == NULL) goto fail;
    }
    return Py_BuildValue("(NNNN)", tids, codes, starts, ends);
fail:
    Py_XDECREF(tids);
    Py_XDECREF(codes);
    Py_XDECREF(starts);
    Py_XDECREF(ends);
    return NULL;
}

static Py_ssize_t varint_size(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_varint(char **p, uint64_t v) {
    while (v >= 0x80) {
        *(*p)++ = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *(*p)++ = (char)v;
}

static PyObject *render_spans(PyObject *self, PyObject *args) {
    PyObject *data, *spans, *extra;
    Py_ssize_t first, n;
    if (!PyArg_ParseTuple(args, "SO!nnO!:render_spans", &data, &PyList_Type, &spans, &first, &n, &PyDict_Type,
                          &extra))
        return NULL;
    if (first < 0 || n < 0 || first + n > PyList_GET_SIZE(spans)) {
        PyErr_SetString(PyExc_IndexError, "render_spans: spans out of range");
        return NULL;
    }
    const char *b = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    PyObject **ex = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *)); /* borrowed: the appended pieces */
    Py_ssize_t *o = PyMem_Malloc(sizeof(Py_ssize_t) * 3 * (size_t)(n ? n : 1));
    PyObject *out = NULL;
    Py_buffer *bufs = NULL;
    Py_ssize_t nbufs = 0, cap = 0;
    if (ex == NULL || o == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(extra, &pos, &k, &v)) {
        Py_ssize_t i = PyLong_AsSsize_t(k);
        if (i == -1 && PyErr_Occurred()) goto done;
        if (i >= first && i < first + n) {
            if (!PyDict_Check(v)) {
                PyErr_SetString(PyExc_TypeError, "render_spans: extra values must be dicts");
                goto done;
            }
            ex[i - first] = v;
            cap += PyDict_GET_SIZE(v);
        }
    }
    bufs = PyMem_Calloc((size_t)(cap ? cap : 1), sizeof(Py_buffer));
    if (bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!span_range(spans, first + i, size, o + 3 * i)) goto done;
        if (ex[i] == NULL) {
            total += o[3 * i + 2] - o[3 * i];
            continue;
        }
        Py_ssize_t len = o[3 * i + 2] - o[3 * i + 1], dp = 0;
        PyObject *dk, *dv;
        while (PyDict_Next(ex[i], &dp, &dk, &dv)) {
            if (nbufs == cap) {
                PyErr_SetString(PyExc_RuntimeError, "render_spans: extra changed while rendering");
                goto done;
            }
            if (PyObject_GetBuffer(dv, &bufs[nbufs], PyBUF_SIMPLE) < 0) goto done;
            len += bufs[nbufs++].len;
        }
        total += 1 + varint_size((uint64_t)len) + len;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) goto done;
    char *p = PyBytes_AS_STRING(out);
    Py_ssize_t bi = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t so = o[3 * i], ss = o[3 * i + 1], se = o[3 * i + 2];
        if (ex[i] == NULL) {
            memcpy(p, b + so, (size_t)(se - so));
            p += se - so;
            continue;
        }
        Py_ssize_t len = se - ss, m = PyDict_GET_SIZE(ex[i]);
        for (Py_ssize_t j = 0; j < m; j++) len += bufs[bi + j].len;
        *p++ = 0x12; /* ScopeSpans.spans */
        put_varint(&p, (uint64_t)len);
        memcpy(p, b + ss, (size_t)(se - ss));
        p += se - ss;
        for (Py_ssize_t j = 0; j < m; j++, bi++) {
            memcpy(p, bufs[bi].buf, (size_t)bufs[bi].len);
            p += bufs[bi].len;
        }
    }
done:
    for (Py_ssize_t j = 0; j < nbufs; j++) PyBuffer_Release(&bufs[j]);
    PyMem_Free(bufs);
    PyMem_Free(ex);
    PyMem_Free(o);
    return out;
}

/* The bytes of `data`, after checking that data[start:end] is inside them; NULL with an error if not. */
static const unsigned char *range_of(PyObject *data, Py_ssize_t start, Py_ssize_t end) {
    if (start < 0 || end > PyBytes_GET_SIZE(data) || start > end) {
        PyErr_SetString(PyExc_ValueError, "range outside the data");
        return NULL;
    }
    return (const unsigned char *)PyBytes_AS_STRING(data);
}

/* Append `item` (a new reference, or NULL after an error) to `list`, taking the reference; 0 on error. */
static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return 0;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc == 0;
}

static PyObject *scope_layout(PyObject *self, PyObject *args) {
    PyObject *data, *spans;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "SnnO!:scope_layout", &data, &start, &end, &PyList_Type, &spans)) return NULL;
    const unsigned char *b = range_of(data, start, end);
    PyObject *others = b == NULL ? NULL : PyList_New(0);
    if (others == NULL) return NULL;
    Py_ssize_t pos = start;
    while (pos < end) {
        Py_ssize_t at = pos;
        uint64_t tag, len;
        if (!read_varint(b, &pos, end, &tag)) goto truncated;
        if (tag == ((2 << 3) | 2)) { /* a span */
            if (!read_varint(b, &pos, end, &len) || len > (uint64_t)(end - pos)) goto truncated;
            pos += (Py_ssize_t)len;
            if (!append_new(spans, Py_BuildValue("(nnn)", at, pos - (Py_ssize_t)len, pos))) goto fail;
        } else {
            if (!skip_field(b, &pos, end, (unsigned)(tag & 7))) goto truncated;
            if (!append_new(others, Py_BuildValue("(nn)", at, pos))) goto fail;
        }
    }
    return others;
fail:
    Py_DECREF(others);
    return NULL;
truncated:
    Py_DECREF(others);
    PyErr_SetString(PyExc_ValueError, "truncated message");
    return NULL;
}

static PyObject *length_fields(PyObject *self, PyObject *args) {
    PyObject *data;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "Snn:length_fields", &data, &start, &end)) return NULL;
    const unsigned char *b = range_of(data, start, end);
    PyObject *out = b == NULL ? NULL : PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t pos = start;
    while (pos < end) {
        uint64_t tag, len;
        if (!read_varint(b, &pos, end, &tag)) goto truncated;
        if ((tag & 7) != 2) {
            if (!skip_field(b, &pos, end, (unsigned)(tag & 7))) goto truncated;
            continue;
        }
        if (!read_varint(b, &pos, end, &len) || len > (uint64_t)(end - pos)) goto truncated;
        pos += (Py_ssize_t)len;
        if (!append_new(out, Py_BuildValue("(Knn)", (unsigned long long)(tag >> 3), pos - (Py_ssize_t)len, pos))) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
truncated:
    Py_DECREF(out);
    PyErr_SetString(PyExc_ValueError, "truncated message");
    return NULL;
}

static PyMethodDef methods[] = {
    {"span_values", span_values, METH_VARARGS,
     "span_values(data, spans, keys, fallback) -> list of {key: value}, one per (tag, start, end) span range: "
     "the values of the span's own attributes whose keys are in the tuple `keys`."},
    {"span_fields", span_fields, METH_VARARGS,
     "span_fields(data, spans) -> (trace ids, status codes, start times, end times), lists with one item per "
     "(tag, start, end) span range, as a parse reads them (defaults for absent fields)."},
    {"scope_layout", scope_layout, METH_VARARGS,
     "scope_layout(data, start, end, spans) -> others: lays out the ScopeSpans body data[start:end], appending "
     "(tag, start, end) of each span to the list spans; the (start, end) of its other fields."},
    {"length_fields", length_fields, METH_VARARGS,
     "length_fields(data, start, end) -> [(field number, value start, value end)] of the length-delimited "
     "fields of the message data[start:end]; ValueError on malformed bytes (and on groups)."},
    {"render_spans", render_spans, METH_VARARGS,
     "render_spans(data, spans, first, n, extra) -> bytes: spans first..first+n-1 as ScopeSpans.spans fields, "
     "each with the pieces of extra[i] (a dict of encoded attributes) appended and its length prefix redone."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "collector._wirec",
                                    "Native walk of serialised OTLP spans (collector/genai.py's wire path).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__wirec(void) { return PyModule_Create(&module); }
