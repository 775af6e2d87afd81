/* The passes of the whole-row online softmax (runtime/online_softmax.py) around its
 * exponentials, compiled: runtime/online_softmax_compiled.py calls them between numpy's exp, which stays
 * numpy's (its SIMD exp's bits are the definition; the C library's exp would round otherwise).
 * Each loop does the float64 operations online_softmax.fold and normalize do, in their order
 * (no contraction into fused multiply-adds: the pragmas below), so the same bits.
 *
 * Layouts: z float64 [rows, cols] C-contiguous; valid uint8 [rows, cols] (nonzero = key
 * valid) or None; CHUNK keys per chunk, chunks = ceil(cols / CHUNK); d float64 [rows, chunks *
 * CHUNK]; maxima, base, sums float64 [rows, chunks]; m, s float64 [rows]; ok uint8 [rows].
 *
 * chunk_maxima(z, valid, maxima) -> bool: each chunk's max over its valid keys (-inf when it
 *   has none); True when a chunk's max is NaN or zero, whose sign or payload depend on the
 *   order numpy's tree compares in (online_softmax.fold's `order_matters`: the caller then
 *   runs the numpy form).
 * shifted(z, valid, base, d): d = z - base[r, chunk] for valid keys, -inf for the others and
 *   the last chunk's padding (fold's keys_first - base).
 * tree_sums(d, sums): each chunk's 64 entries added pairwise in fold's fixed tree (entry i
 *   with entry i + width, width halving from 32).
 * gather(z, base, m, ok, g) -> n: z - m of every key of each ok row's chunks whose base is not
 *   the row's final max (their exp(z - base) is not normalize's exp(z - m)), row by row.
 * finish(d, g, base, m, s, ok, valid, out): normalize's float32(exp(z - m) / s), exp(z - m)
 *   taken from d where base == m and from the exponentiated g elsewhere; 0 for invalid keys
 *   and rows not ok.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define CHUNK 64

#include "_buffer_args.h"

/* Up to 8 buffers of one call, released together. */
typedef struct {
    Py_buffer views[8];
    int count;
} Buffers;

static void *take(Buffers *b, PyObject *obj, const char *formats, Py_ssize_t count, int writable,
                  const char *what) {
    if (obj == Py_None || PyErr_Occurred()) /* an optional operand, or an earlier failure */
        return NULL;
    if (get_buffer(obj, &b->views[b->count], formats, count, writable, what) < 0)
        return NULL;
    return b->views[b->count++].buf;
}

static void release(Buffers *b) {
    for (int i = 0; i < b->count; i++)
        PyBuffer_Release(&b->views[i]);
}

static int shape_of(PyObject *z_obj, Py_ssize_t *rows, Py_ssize_t *cols) {
    Py_buffer view;
    if (PyObject_GetBuffer(z_obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    int good = view.ndim == 2 && view.format && strcmp(view.format, "d") == 0;
    if (good) {
        *rows = view.shape[0];
        *cols = view.shape[1];
    }
    PyBuffer_Release(&view);
    if (!good)
        PyErr_SetString(PyExc_ValueError, "z: expected float64 [rows, cols], C-contiguous");
    return good ? 0 : -1;
}

/* The max of row[start:end] over its valid keys (-inf when none); *nan set when one is NaN. */
static double chunk_peak(const double *row, const uint8_t *valid, Py_ssize_t start,
                         Py_ssize_t end, int *nan) {
    double peak = -INFINITY;
    Py_ssize_t k = start;
#ifdef __SSE2__
    if (!valid) {
        __m128d acc = _mm_set1_pd(-INFINITY), unordered = _mm_setzero_pd();
        for (; k + 2 <= end; k += 2) {
            __m128d v = _mm_loadu_pd(row + k);
            unordered = _mm_or_pd(unordered, _mm_cmpunord_pd(v, v));
            acc = _mm_max_pd(v, acc);
        }
        double lanes[2];
        _mm_storeu_pd(lanes, acc);
        peak = lanes[1] > lanes[0] ? lanes[1] : lanes[0];
        *nan |= _mm_movemask_pd(unordered) != 0;
    }
#endif
    for (; k < end; k++) {
        if (valid && !valid[k])
            continue;
        double v = row[k];
        *nan |= v != v;
        peak = v > peak ? v : peak;
    }
    return peak;
}

static PyObject *chunk_maxima(PyObject *self, PyObject *args) {
    PyObject *z_obj, *valid_obj, *maxima_obj;
    Py_ssize_t rows, cols;
    if (!PyArg_ParseTuple(args, "OOO", &z_obj, &valid_obj, &maxima_obj) ||
        shape_of(z_obj, &rows, &cols) < 0)
        return NULL;
    Py_ssize_t chunks = (cols + CHUNK - 1) / CHUNK;
    Buffers b = {.count = 0};
    const double *z = take(&b, z_obj, "d", rows * cols, 0, "z");
    const uint8_t *valid = take(&b, valid_obj, "B?", rows * cols, 0, "valid");
    double *maxima = take(&b, maxima_obj, "d", rows * chunks, 1, "maxima");
    if (PyErr_Occurred()) {
        release(&b);
        return NULL;
    }
    int order_matters = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        for (Py_ssize_t c = 0; c < chunks; c++) {
            Py_ssize_t start = c * CHUNK, end = start + CHUNK < cols ? start + CHUNK : cols;
            double peak = chunk_peak(z + r * cols, valid ? valid + r * cols : NULL, start, end,
                                     &order_matters);
            order_matters |= peak == 0.0;
            maxima[r * chunks + c] = peak;
        }
    }
    Py_END_ALLOW_THREADS
    release(&b);
    return PyBool_FromLong(order_matters);
}

static PyObject *shifted(PyObject *self, PyObject *args) {
    PyObject *z_obj, *valid_obj, *base_obj, *d_obj;
    Py_ssize_t rows, cols;
    if (!PyArg_ParseTuple(args, "OOOO", &z_obj, &valid_obj, &base_obj, &d_obj) ||
        shape_of(z_obj, &rows, &cols) < 0)
        return NULL;
    Py_ssize_t chunks = (cols + CHUNK - 1) / CHUNK, width = chunks * CHUNK;
    Buffers b = {.count = 0};
    const double *z = take(&b, z_obj, "d", rows * cols, 0, "z");
    const uint8_t *valid = take(&b, valid_obj, "B?", rows * cols, 0, "valid");
    const double *base = take(&b, base_obj, "d", rows * chunks, 0, "base");
    double *d = take(&b, d_obj, "d", rows * width, 1, "d");
    if (PyErr_Occurred()) {
        release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        const double *zr = z + r * cols;
        double *dr = d + r * width;
        for (Py_ssize_t c = 0; c < chunks; c++) {
            Py_ssize_t start = c * CHUNK, end = start + CHUNK < cols ? start + CHUNK : cols;
            double shift = base[r * chunks + c];
            for (Py_ssize_t k = start; k < end; k++)
                dr[k] = zr[k] - shift;
            if (valid)
                for (Py_ssize_t k = start; k < end; k++)
                    dr[k] = valid[r * cols + k] ? dr[k] : -INFINITY;
        }
        for (Py_ssize_t k = cols; k < width; k++)
            dr[k] = -INFINITY;
    }
    Py_END_ALLOW_THREADS
    release(&b);
    Py_RETURN_NONE;
}

static PyObject *tree_sums(PyObject *self, PyObject *args) {
    PyObject *d_obj, *sums_obj;
    if (!PyArg_ParseTuple(args, "OO", &d_obj, &sums_obj))
        return NULL;
    Buffers b = {.count = 0};
    const double *d = take(&b, d_obj, "d", -1, 0, "d");
    Py_ssize_t groups = d ? b.views[0].len / (Py_ssize_t)sizeof(double) / CHUNK : 0;
    double *sums = d ? take(&b, sums_obj, "d", groups, 1, "sums") : NULL;
    if (PyErr_Occurred()) {
        release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t g = 0; g < groups; g++) {
        const double *e = d + g * CHUNK;
        double acc[CHUNK / 2];
        for (int i = 0; i < CHUNK / 2; i++)
            acc[i] = e[i] + e[i + CHUNK / 2];
        for (int width = CHUNK / 4; width >= 1; width /= 2)
            for (int i = 0; i < width; i++)
                acc[i] = acc[i] + acc[i + width];
        sums[g] = acc[0];
    }
    Py_END_ALLOW_THREADS
    release(&b);
    Py_RETURN_NONE;
}

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *z_obj, *base_obj, *m_obj, *ok_obj, *g_obj;
    Py_ssize_t rows, cols;
    if (!PyArg_ParseTuple(args, "OOOOO", &z_obj, &base_obj, &m_obj, &ok_obj, &g_obj) ||
        shape_of(z_obj, &rows, &cols) < 0)
        return NULL;
    Py_ssize_t chunks = (cols + CHUNK - 1) / CHUNK, n = 0;
    Buffers b = {.count = 0};
    const double *z = take(&b, z_obj, "d", rows * cols, 0, "z");
    const double *base = take(&b, base_obj, "d", rows * chunks, 0, "base");
    const double *m = take(&b, m_obj, "d", rows, 0, "m");
    const uint8_t *ok = take(&b, ok_obj, "B?", rows, 0, "ok");
    double *g = take(&b, g_obj, "d", rows * cols, 1, "g");
    if (PyErr_Occurred()) {
        release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        if (!ok[r])
            continue;
        for (Py_ssize_t c = 0; c < chunks; c++) {
            if (base[r * chunks + c] == m[r])
                continue;
            Py_ssize_t start = c * CHUNK, end = start + CHUNK < cols ? start + CHUNK : cols;
            for (Py_ssize_t k = start; k < end; k++)
                g[n++] = z[r * cols + k] - m[r];
        }
    }
    Py_END_ALLOW_THREADS
    release(&b);
    return PyLong_FromSsize_t(n);
}

static PyObject *finish(PyObject *self, PyObject *args) {
    PyObject *d_obj, *g_obj, *base_obj, *m_obj, *s_obj, *ok_obj, *valid_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOOOOO", &d_obj, &g_obj, &base_obj, &m_obj, &s_obj, &ok_obj,
                          &valid_obj, &out_obj))
        return NULL;
    Py_buffer shape;
    if (PyObject_GetBuffer(out_obj, &shape, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    int good = shape.ndim == 2;
    Py_ssize_t rows = good ? shape.shape[0] : 0, cols = good ? shape.shape[1] : 0;
    PyBuffer_Release(&shape);
    if (!good) {
        PyErr_SetString(PyExc_ValueError, "out: expected float32 [rows, cols]");
        return NULL;
    }
    Py_ssize_t chunks = (cols + CHUNK - 1) / CHUNK, width = chunks * CHUNK, n = 0;
    Buffers b = {.count = 0};
    const double *d = take(&b, d_obj, "d", rows * width, 0, "d");
    const double *g = take(&b, g_obj, "d", rows * cols, 0, "g");
    const double *base = take(&b, base_obj, "d", rows * chunks, 0, "base");
    const double *m = take(&b, m_obj, "d", rows, 0, "m");
    const double *s = take(&b, s_obj, "d", rows, 0, "s");
    const uint8_t *ok = take(&b, ok_obj, "B?", rows, 0, "ok");
    const uint8_t *valid = take(&b, valid_obj, "B?", rows * cols, 0, "valid");
    float *out = take(&b, out_obj, "f", rows * cols, 1, "out");
    if (PyErr_Occurred()) {
        release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *o = out + r * cols;
        if (!ok[r]) {
            memset(o, 0, (size_t)cols * sizeof(float));
            continue;
        }
        for (Py_ssize_t c = 0; c < chunks; c++) {
            Py_ssize_t start = c * CHUNK, end = start + CHUNK < cols ? start + CHUNK : cols;
            const double *e = d + r * width + start;
            if (base[r * chunks + c] != m[r]) { /* gather's order: these keys come next in g */
                e = g + n;
                n += end - start;
            }
            double sum = s[r];
            for (Py_ssize_t k = 0; k < end - start; k++)
                o[start + k] = (float)(e[k] / sum);
            if (valid)
                for (Py_ssize_t k = start; k < end; k++)
                    o[k] = valid[r * cols + k] ? o[k] : 0.0f;
        }
    }
    Py_END_ALLOW_THREADS
    release(&b);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"chunk_maxima", chunk_maxima, METH_VARARGS, "each chunk's max; True when order matters"},
    {"shifted", shifted, METH_VARARGS, "z - each chunk's base, -inf where invalid"},
    {"tree_sums", tree_sums, METH_VARARGS, "each chunk's pairwise tree sum"},
    {"gather", gather, METH_VARARGS, "z - m where the fold's exponentials do not serve"},
    {"finish", finish, METH_VARARGS, "float32(exp(z - m) / s)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_softmax_loops", NULL, -1, methods};

PyMODINIT_FUNC PyInit__softmax_loops(void) { return PyModule_Create(&module); }
