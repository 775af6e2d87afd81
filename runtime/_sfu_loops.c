/* The functional model's GELU (erf form) and DEQUANT in one pass per element, compiled: the
 * numpy forms (gelu_erf.py, dequantize_rows.py) take 10-40 passes over each tile, which made
 * them two of the largest costs of an esact-run (issue 16). Same float64 operations in the same
 * order, each rounded as IEEE double arithmetic rounds (no contraction into fused
 * multiply-adds: the pragmas below), so the same float32 bits as the numpy forms
 * (test/unit/runtime/test_sfu_loops.py compares them).
 *
 * gelu_erf(x, out, coefficients, spread_per_x)
 *   x: float64[n] (C-contiguous), out: float32[n]; coefficients: float64 fdlibm erf |w| < 0.84375
 *   numerator (5) then denominator (6), lowest degree first (gelu_erf._PP, _QQ); spread_per_x:
 *   gelu_erf.SPREAD_PER_X. out = float32(0.5 * x * (1 + erf(x / sqrt(2)))) with the C
 *   library's erf (what math.erf calls): the rational fit where |w| < 0.84375 when its rounding
 *   guard is sure (gelu_erf._gelu_chunk's argument), erf itself otherwise; the fit and the
 *   guard for blocks of elements in a vectorized loop, erf after it for the few left.
 * dequantize(src, col_scale, row_scale, scalar, bias, out)
 *   src: int32 or float32 [rows * cols]; col_scale: float32[cols]; row_scale: float32[rows] or
 *   None; scalar: float or None; bias: float32[cols] or None; out: float32[rows * cols].
 *   out = float32(src * col_scale[c] (* row_scale[r]) (* scalar) (+ bias[c])) in float64.
 * quant_rows(x, scales, codes)
 *   x: float32 [rows, cols], rows at any stride (a buffer's row stride), each row contiguous;
 *   scales: float32[rows], codes: int8[rows * cols]. QUANT_ROWS (isa_token_scales.row_scales
 *   and quantize_rows): scale = float32(max |x| / 127) in float64 (NaN skipped, 1 when not
 *   finite and > 0), codes = x * float32(1 / scale) in float64, clipped to +-127, rounded half
 *   to even, NaN -> 0. Two passes per row where numpy took eight over the tile (SSE2 where
 *   present, the scalar loop for the rest of a row and elsewhere; the same results).
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

#include "_buffer_args.h"

static double horner(const double *c, int degree, double z) {
    /* gelu_erf._poly: the top coefficient's product first, then times z plus each lower one */
    double r = z * c[degree];
    r += c[degree - 1];
    for (int k = degree - 2; k >= 0; k--) {
        r *= z;
        r += c[k];
    }
    return r;
}

#define GELU_BLOCK 256

/* GCC on x86-64: an AVX2 clone besides the baseline one, chosen at load by the CPU (AVX2 has no
 * fused multiply-add, and the pragmas above forbid contraction: the same roundings). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* gelu_erf over n <= GELU_BLOCK elements: the fit and its rounding guard for every element in a
 * branch-free loop the compiler vectorizes, then the C library's erf where the fit does not
 * apply (|w| >= 0.84375, NaN) or its guard is unsure. */
VECTOR_CLONES
static void gelu_block(const double *x, float *out, Py_ssize_t n, const double *pp,
                       const double *qq, double spread_per_x) {
    const double root2 = sqrt(2.0);
    unsigned char unsure[GELU_BLOCK];
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = x[i], w = v / root2;
        double z = w * w, e = horner(pp, 4, z);
        e /= horner(qq, 5, z);
        e *= w;
        e += w;
        double y = e + 1.0, spread = fabs(v) * spread_per_x;
        y *= 0.5 * v;
        float low = (float)(y - spread), high = (float)(y + spread);
        out[i] = (float)y;
        unsure[i] = !(fabs(w) < 0.84375) | (low != high); /* NaN fails the first test */
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (unsure[i]) {
            double v = x[i], w = v / root2;
            out[i] = (float)(0.5 * v * (1.0 + erf(w)));
        }
}

static PyObject *gelu_erf(PyObject *self, PyObject *args) {
    PyObject *x_obj, *out_obj, *c_obj;
    double spread_per_x;
    if (!PyArg_ParseTuple(args, "OOOd", &x_obj, &out_obj, &c_obj, &spread_per_x))
        return NULL;
    Py_buffer xb, ob, cb;
    if (get_buffer(c_obj, &cb, "d", 11, 0, "coefficients") < 0)
        return NULL;
    if (get_buffer(x_obj, &xb, "d", -1, 0, "x") < 0) {
        PyBuffer_Release(&cb);
        return NULL;
    }
    Py_ssize_t n = xb.len / (Py_ssize_t)sizeof(double);
    if (get_buffer(out_obj, &ob, "f", n, 1, "out") < 0) {
        PyBuffer_Release(&cb);
        PyBuffer_Release(&xb);
        return NULL;
    }
    const double *x = xb.buf, *pp = cb.buf, *qq = (const double *)cb.buf + 5;
    float *out = ob.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t start = 0; start < n; start += GELU_BLOCK) {
        Py_ssize_t count = n - start < GELU_BLOCK ? n - start : GELU_BLOCK;
        gelu_block(x + start, out + start, count, pp, qq, spread_per_x);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&cb);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&ob);
    Py_RETURN_NONE;
}

/* DEQUANT's arithmetic over rows x cols (row, bias: NULL when absent). */
VECTOR_CLONES
static void dequantize_rows(const void *src, int is_int, Py_ssize_t rows, Py_ssize_t cols,
                            const float *col, const float *row, int has_scalar, double scalar,
                            const float *bias, float *out) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const int32_t *si = (const int32_t *)src + r * cols;
        const float *sf = (const float *)src + r * cols;
        double rs = row ? (double)row[r] : 1.0;
        for (Py_ssize_t c = 0; c < cols; c++) {
            double y = is_int ? (double)si[c] : (double)sf[c];
            y *= (double)col[c];
            if (row)
                y *= rs;
            if (has_scalar)
                y *= scalar;
            if (bias)
                y += (double)bias[c];
            out[r * cols + c] = (float)y;
        }
    }
}

static PyObject *dequantize(PyObject *self, PyObject *args) {
    PyObject *src_obj, *col_obj, *row_obj, *scalar_obj, *bias_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO", &src_obj, &col_obj, &row_obj, &scalar_obj, &bias_obj,
                          &out_obj))
        return NULL;
    Py_buffer sb, cb, rb = {0}, bb = {0}, ob;
    int has_row = row_obj != Py_None, has_bias = bias_obj != Py_None;
    int has_scalar = scalar_obj != Py_None;
    double scalar = has_scalar ? PyFloat_AsDouble(scalar_obj) : 1.0;
    if (has_scalar && PyErr_Occurred())
        return NULL;
    Py_ssize_t cols = PyObject_Length(col_obj);
    if (cols < 0 || get_buffer(col_obj, &cb, "f", cols, 0, "col_scale") < 0)
        return NULL;
    if (get_buffer(src_obj, &sb, "if", -1, 0, "src") < 0)
        goto fail_c;
    Py_ssize_t total = sb.len / sb.itemsize, rows = cols ? total / cols : 0;
    if (rows * cols != total) {
        PyErr_SetString(PyExc_ValueError, "src: not a whole number of rows");
        goto fail_s;
    }
    if (has_row && get_buffer(row_obj, &rb, "f", rows, 0, "row_scale") < 0)
        goto fail_s;
    if (has_bias && get_buffer(bias_obj, &bb, "f", cols, 0, "bias") < 0)
        goto fail_r;
    if (get_buffer(out_obj, &ob, "f", total, 1, "out") < 0)
        goto fail_b;
    int is_int = ((const char *)sb.format)[strlen(sb.format) - 1] == 'i';
    const float *col = cb.buf, *row = rb.buf, *bias = bb.buf;
    float *out = ob.buf;
    Py_BEGIN_ALLOW_THREADS
    dequantize_rows(sb.buf, is_int, rows, cols, col, has_row ? row : NULL, has_scalar, scalar,
                    has_bias ? bias : NULL, out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ob);
fail_b:
    if (has_bias)
        PyBuffer_Release(&bb);
fail_r:
    if (has_row)
        PyBuffer_Release(&rb);
fail_s:
    PyBuffer_Release(&sb);
fail_c:
    PyBuffer_Release(&cb);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* max |x| over n floats from `peak` on, NaN skipped (it compares false) */
static float peak_scalar(const float *x, Py_ssize_t n, float peak) {
    for (Py_ssize_t c = 0; c < n; c++) {
        float v = fabsf(x[c]);
        peak = v > peak ? v : peak;
    }
    return peak;
}

static void codes_scalar(const float *x, Py_ssize_t n, double mult, int8_t *codes) {
    for (Py_ssize_t c = 0; c < n; c++) {
        double y = (double)x[c] * mult; /* exact: two float32 significands */
        y = y > 127.0 ? 127.0 : y < -127.0 ? -127.0 : y;
        codes[c] = y == y ? (int8_t)nearbyint(y) : 0; /* default rounding: half to even */
    }
}

static void quant_row(const float *x, Py_ssize_t cols, float *scale_out, int8_t *codes) {
    Py_ssize_t c = 0;
    float peak = 0.0f; /* a row of NaN and zeros: scale 1 either way */
#ifdef __SSE2__
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    __m128 acc = _mm_setzero_ps();
    for (; c + 4 <= cols; c += 4) /* maxps returns its second operand when one is NaN */
        acc = _mm_max_ps(_mm_and_ps(_mm_loadu_ps(x + c), absmask), acc);
    float lanes[4];
    _mm_storeu_ps(lanes, acc);
    peak = peak_scalar(lanes, 4, peak);
#endif
    peak = peak_scalar(x + c, cols - c, peak);
    float scale = (float)((double)peak / 127.0);
    if (!(isfinite(scale) && scale > 0.0f))
        scale = 1.0f;
    *scale_out = scale;
    double mult = (double)(float)(1.0 / (double)scale);
    c = 0;
#ifdef __SSE2__
    const __m128d m = _mm_set1_pd(mult), hi = _mm_set1_pd(127.0), lo = _mm_set1_pd(-127.0);
    for (; c + 8 <= cols; c += 8) {
        __m128i q[4];
        for (int k = 0; k < 4; k++) {
            __m128 f = _mm_loadu_ps(x + c + 4 * (k >> 1));
            __m128d y = _mm_mul_pd(_mm_cvtps_pd((k & 1) ? _mm_movehl_ps(f, f) : f), m);
            y = _mm_max_pd(lo, _mm_min_pd(hi, y));  /* a NaN y is the second operand: kept */
            y = _mm_and_pd(y, _mm_cmpord_pd(y, y)); /* NaN -> +0 */
            q[k] = _mm_cvtpd_epi32(y); /* the MXCSR's default rounding: half to even */
        }
        __m128i words = _mm_packs_epi32(_mm_unpacklo_epi64(q[0], q[1]),
                                        _mm_unpacklo_epi64(q[2], q[3]));
        _mm_storel_epi64((__m128i *)(codes + c), _mm_packs_epi16(words, words));
    }
#endif
    codes_scalar(x + c, cols - c, mult, codes + c);
}

static PyObject *quant_rows(PyObject *self, PyObject *args) {
    PyObject *x_obj, *scales_obj, *codes_obj;
    if (!PyArg_ParseTuple(args, "OOO", &x_obj, &scales_obj, &codes_obj))
        return NULL;
    Py_buffer xb, sb, cb;
    if (PyObject_GetBuffer(x_obj, &xb, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return NULL;
    const char *format = xb.format ? xb.format : "B";
    if (format[0] == '<' || format[0] == '=')
        format++;
    if (strcmp(format, "f") != 0 || xb.ndim != 2 || xb.strides[1] != 4 || xb.strides[0] < 0 ||
        xb.strides[0] % 4 != 0) {
        PyErr_SetString(PyExc_ValueError, "x: expected float32 [rows, cols], rows contiguous");
        PyBuffer_Release(&xb);
        return NULL;
    }
    Py_ssize_t rows = xb.shape[0], cols = xb.shape[1], stride = xb.strides[0] / 4;
    if (get_buffer(scales_obj, &sb, "f", rows, 1, "scales") < 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    if (get_buffer(codes_obj, &cb, "b", rows * cols, 1, "codes") < 0) {
        PyBuffer_Release(&xb);
        PyBuffer_Release(&sb);
        return NULL;
    }
    const float *x = xb.buf;
    float *scales = sb.buf;
    int8_t *codes = cb.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++)
        quant_row(x + r * stride, cols, scales + r, codes + r * cols);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&xb);
    PyBuffer_Release(&sb);
    PyBuffer_Release(&cb);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gelu_erf", gelu_erf, METH_VARARGS, "float32 GELU (erf) of a float64 buffer"},
    {"dequantize", dequantize, METH_VARARGS, "DEQUANT's float64 arithmetic, rounded to float32"},
    {"quant_rows", quant_rows, METH_VARARGS, "QUANT_ROWS: per-row scales and int8 codes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sfu_loops", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sfu_loops(void) { return PyModule_Create(&module); }
