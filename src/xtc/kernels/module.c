/* The Python bindings of xtc.kernels._lowbit: contiguous buffers in, results written into
 * caller-allocated buffers (see lowbit.h for what the kernels compute). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#include "lowbit.h"

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t count, int writable,
                      const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->itemsize != itemsize || view->len != itemsize * count) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes", name, count, itemsize,
                     view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int resolve_path(int path) {
    if (path == PATH_AUTO) return xtc_best_path();
    if (path < PATH_REFERENCE || path > PATH_AVX512 || !xtc_cpu_has(path)) {
        PyErr_Format(PyExc_ValueError, "kernel path %d is not available on this CPU", path);
        return -1;
    }
    return path;
}

/* The buffers a call holds, taken from Python objects and checked against the shapes. */
typedef struct {
    Py_buffer views[8];
    int held;
} held_buffers;

/* obj's buffer (None: NULL), held in h; on a bad buffer, NULL with an exception and *ok = 0. Does
 * nothing once *ok is 0, so a call takes its buffers one after the other and checks ok once. */
static void *take(held_buffers *h, PyObject *obj, Py_ssize_t itemsize, Py_ssize_t count, int writable,
                  const char *name, int *ok) {
    if (!*ok || obj == Py_None) return NULL;
    if (get_buffer(obj, &h->views[h->held], itemsize, count, writable, name) < 0) {
        *ok = 0;
        return NULL;
    }
    return h->views[h->held++].buf;
}

/* Releases the buffers and returns the call's result: None, or NULL with an exception. */
static PyObject *finish(held_buffers *h, int ok, int failed) {
    while (h->held) PyBuffer_Release(&h->views[--h->held]);
    if (!ok) return NULL;
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_quantize_rows(PyObject *self, PyObject *args) {
    PyObject *xo, *ao, *so;
    long long M, K, Mp, Kp;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLOLLOii", &xo, &M, &K, &ao, &Mp, &Kp, &so, &path, &threads)) return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Mp < M || Kp < K) return PyErr_Format(PyExc_ValueError, "padded shape smaller than the data");
    held_buffers h = {.held = 0};
    int ok = 1;
    const float *x = take(&h, xo, 4, M * K, 0, "x", &ok);
    uint8_t *a = take(&h, ao, 1, Mp * Kp, 1, "a", &ok);
    float *scale = take(&h, so, 4, M, 1, "scale", &ok);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        xtc_quantize_parallel(x, M, K, Mp, Kp, a, scale, path, threads);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, 0);
}

/* Fills g's weight, scale and output fields (g->M, g->Kp, g->N set); clears *ok on a bad buffer. */
static void take_gemm_buffers(gemm_job *g, held_buffers *h, PyObject *no, PyObject *zo, PyObject *co, PyObject *alo,
                              PyObject *bo, PyObject *oo, int scaled, int *ok) {
    const long long np = (g->N + PANEL - 1) / PANEL, kq = g->Kp / 4;
    g->neg = take(h, no, 8, np * kq, 0, "neg", ok);
    g->nonzero = take(h, zo, 8, np * kq, 0, "nonzero", ok);
    g->colsum = take(h, co, 4, g->N, 0, "colsum", ok);
    if (scaled && *ok) {
        Py_buffer probe;
        if (PyObject_GetBuffer(alo, &probe, PyBUF_C_CONTIGUOUS) < 0) {
            *ok = 0;
            return;
        }
        g->alpha_per_row = probe.len == 4 * g->N && g->N > 1;
        PyBuffer_Release(&probe);
        g->alpha = take(h, alo, 4, g->alpha_per_row ? g->N : 1, 0, "alpha", ok);
        g->bias = take(h, bo, 4, g->N, 0, "bias", ok);
        g->y = take(h, oo, 4, g->M * g->N, 1, "y", ok);
    } else if (!scaled) {
        g->acc = take(h, oo, 4, g->M * g->N, 1, "acc", ok);
    }
    if (*ok && (!g->neg || !g->colsum || (scaled ? !g->y : !g->acc))) {
        PyErr_SetString(PyExc_ValueError, "neg, colsum and the output are required");
        *ok = 0;
    }
}

/* gemm(a, M, Kp, neg, nonzero|None, colsum, N, acc, path, threads): the exact int32 products of
 * activation codes already quantized (a: codes + 128, padded) with the weight codes. */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    PyObject *ao, *no, *zo, *co, *oo;
    long long M, Kp, N;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLOOOLOii", &ao, &M, &Kp, &no, &zo, &co, &N, &oo, &path, &threads)) return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Kp % 4 || M < 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad gemm shape");
    gemm_job g = {.M = M, .Kp = Kp, .N = N};
    held_buffers h = {.held = 0};
    int ok = 1, failed = 0;
    take_gemm_buffers(&g, &h, no, zo, co, Py_None, Py_None, oo, 0, &ok);
    g.a = take(&h, ao, 1, (M + MR - 1) / MR * MR * Kp, 0, "a", &ok);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        failed = xtc_gemm_parallel(&g, path, threads);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, failed);
}

/* linear(x, M, K, Kp, neg, nonzero|None, colsum, N, alpha, bias|None, y, path, threads): the fused
 * Linear, y = quantize(x) @ w.T * (scale * alpha) + bias, quantization and product both split across
 * threads. */
static PyObject *py_linear(PyObject *self, PyObject *args) {
    PyObject *xo, *no, *zo, *co, *alo, *bo, *oo;
    long long M, K, N, Kp;
    int path, threads;
    if (!PyArg_ParseTuple(args, "OLLLOOOLOOOii", &xo, &M, &K, &Kp, &no, &zo, &co, &N, &alo, &bo, &oo, &path, &threads))
        return NULL;
    if ((path = resolve_path(path)) < 0) return NULL;
    if (Kp % 4 || Kp < K || M < 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad linear shape");
    const long long rows = (M + MR - 1) / MR * MR;
    gemm_job g = {.M = M, .Kp = Kp, .N = N};
    held_buffers h = {.held = 0};
    int ok = 1, failed = 0;
    take_gemm_buffers(&g, &h, no, zo, co, alo, bo, oo, 1, &ok);
    const float *x = take(&h, xo, 4, M * K, 0, "x", &ok);
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        uint8_t *a = malloc((size_t)(rows * Kp) + 1);
        float *scale = malloc((size_t)(M + 1) * sizeof(float));
        if (a && scale) {
            xtc_quantize_parallel(x, M, K, rows, Kp, a, scale, path, threads);
            g.a = a, g.scale = scale;
            failed = xtc_gemm_parallel(&g, path, threads);
        } else {
            failed = 1;
        }
        free(a);
        free(scale);
        Py_END_ALLOW_THREADS
    }
    return finish(&h, ok, failed);
}

static PyObject *py_available_paths(PyObject *self, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    const char *names[] = {"", "reference", "avx2", "avx512-vnni"};
    for (int p = PATH_REFERENCE; p <= PATH_AVX512; p++)
        if (xtc_cpu_has(p)) {
            PyObject *name = PyUnicode_FromString(names[p]);
            PyList_Append(out, name);
            Py_DECREF(name);
        }
    return out;
}

/* Which threads run the shares: the process's OpenMP runtime, or POSIX threads. */
static PyObject *py_threading(PyObject *self, PyObject *noargs) {
    const char *runtime = xtc_openmp_runtime();
    return runtime ? PyUnicode_FromFormat("openmp (%s)", runtime) : PyUnicode_FromString("pthreads");
}

static PyMethodDef methods[] = {
    {"quantize_rows", py_quantize_rows, METH_VARARGS, "quantize_rows(x, M, K, a_out, Mp, Kp, scale_out, path, threads)"},
    {"linear", py_linear, METH_VARARGS,
     "linear(x, M, K, Kp, neg, nonzero, colsum, N, alpha, bias, y, path, threads): quantize and multiply"},
    {"gemm", py_gemm, METH_VARARGS, "gemm(a, M, Kp, neg, nonzero, colsum, N, acc, path, threads): int32 products"},
    {"available_paths", py_available_paths, METH_NOARGS, "the kernel paths this CPU runs, slowest first"},
    {"threading", py_threading, METH_NOARGS, "what runs the kernels' threads: 'openmp (LIB)' or 'pthreads'"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_lowbit", .m_doc = "xtc low-bit kernels", .m_size = -1, .m_methods = methods};

/* Bumped whenever the functions above change: xtc.kernels refuses a build older than its Python side. */
#define API_VERSION 2

PyMODINIT_FUNC PyInit__lowbit(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
