/* The timing model's event loop compiled: the same loop as timing_events.run_events_python
 * (the reference; see timing_events.py for what it does and why the order of events is
 * what it is), on contiguous int64 arrays passed through the buffer protocol. It gives the
 * same start and end times, final queue heads and processing order as the Python loop
 * (test/unit/timing/test_compiled_event_loop.py); the Python side prepares the arrays
 * and checks that no time can overflow int64.
 *
 * run_events(queue_of, first, more, extra_start, extra_flat, following, cycle, port, wake,
 *            eager_mask, lat, head, start, end, processed) -> number of instructions timed
 *
 *   n instructions, nq queues (len(head)); indices into end[] (n + 2 entries: end[n] is
 *   never ready, end[n + 1] always) are checked before the loop runs:
 *   queue_of[n], following[n]  an instruction's queue; the next one of its queue (n: none)
 *   first[n + 1], more[n + 1]  producer of the lowest-bit pop (n + 1: no pop); 0 for at most
 *                              one pop, 1 + the second producer for two, -1 for more, whose
 *                              producers are extra_flat[extra_start[i]:extra_start[i + 1]]
 *   cycle[n], port[n], wake[n] duration, DRAM port cycles, mask of other queues woken
 *   eager_mask                 queues timed as soon as their tokens are in (not the heap)
 *   head[nq] (in/out), start[n], end[n + 2], processed[n] (out)
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define NEVER ((int64_t)1 << 62) /* timing_events.NEVER */

typedef struct {
    int64_t t, i;
} Entry;

typedef struct {
    const int64_t *queue_of, *first, *more, *extra_start, *extra_flat, *following, *cycle,
        *port, *wake;
    int64_t *head, *start, *end, *processed, *free_at;
    char *in_heap;
    uint64_t eager;
    int64_t lat;
    Entry *heap; /* a binary heap ordered by (t, i); at most one entry per queue */
    Py_ssize_t heap_len;
    int64_t *stack; /* eager queues to try again (LIFO, duplicates allowed, as in Python) */
    Py_ssize_t stack_len, stack_cap;
} Loop;

static inline int entry_less(Entry a, Entry b) {
    return a.t < b.t || (a.t == b.t && a.i < b.i);
}

static void sift_down(Entry *heap, Py_ssize_t len, Py_ssize_t k) {
    Entry item = heap[k];
    for (;;) {
        Py_ssize_t child = 2 * k + 1;
        if (child >= len)
            break;
        if (child + 1 < len && entry_less(heap[child + 1], heap[child]))
            child++;
        if (!entry_less(heap[child], item))
            break;
        heap[k] = heap[child];
        k = child;
    }
    heap[k] = item;
}

static void heap_push(Loop *s, Entry item) {
    Py_ssize_t k = s->heap_len++;
    while (k > 0) {
        Py_ssize_t parent = (k - 1) / 2;
        if (!entry_less(item, s->heap[parent]))
            break;
        s->heap[k] = s->heap[parent];
        k = parent;
    }
    s->heap[k] = item;
}

static Entry heap_pop(Loop *s) {
    Entry top = s->heap[0];
    s->heap[0] = s->heap[--s->heap_len];
    if (s->heap_len)
        sift_down(s->heap, s->heap_len, 0);
    return top;
}

/* heapq.heappushpop: the smaller of item and the heap's top; the other stays. */
static Entry heap_pushpop(Loop *s, Entry item) {
    if (s->heap_len && entry_less(s->heap[0], item)) {
        Entry top = s->heap[0];
        s->heap[0] = item;
        sift_down(s->heap, s->heap_len, 0);
        return top;
    }
    return item;
}

static int stack_push(Loop *s, int64_t q) {
    if (s->stack_len == s->stack_cap) {
        Py_ssize_t cap = 2 * s->stack_cap;
        int64_t *grown = PyMem_Realloc(s->stack, (size_t)cap * sizeof(int64_t));
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        s->stack = grown;
        s->stack_cap = cap;
    }
    s->stack[s->stack_len++] = q;
    return 0;
}

/* t raised to the arrival of instruction i's second and further tokens (more[i] != 0). */
static inline int64_t later_tokens(const Loop *s, int64_t i, int64_t t) {
    int64_t m = s->more[i];
    if (m > 0) {
        int64_t r = s->end[m - 1] + s->lat;
        return r > t ? r : t;
    }
    for (int64_t k = s->extra_start[i]; k < s->extra_start[i + 1]; k++) {
        int64_t r = s->end[s->extra_flat[k]] + s->lat;
        if (t < r)
            t = r;
    }
    return t;
}

/* Queues in mask w got a token: an eager one is tried again, a heap queue's head goes on
 * the heap once all its tokens are pushed. */
static int woken(Loop *s, uint64_t w) {
    while (w) {
        int dst = __builtin_ctzll(w);
        w &= w - 1;
        if (s->eager >> dst & 1) {
            if (stack_push(s, dst) < 0)
                return -1;
        } else if (!s->in_heap[dst]) {
            int64_t h = s->head[dst];
            int64_t r = s->end[s->first[h]] + s->lat;
            if (r < s->free_at[dst])
                r = s->free_at[dst];
            if (s->more[h])
                r = later_tokens(s, h, r);
            if (r < NEVER) {
                heap_push(s, (Entry){r, h});
                s->in_heap[dst] = 1;
            }
        }
    }
    return 0;
}

/* Time each eager queue's heads while their tokens are all pushed. */
static int run_eager(Loop *s, int64_t *n_done) {
    while (s->stack_len) {
        int64_t q = s->stack[--s->stack_len];
        int64_t i = s->head[q];
        int64_t e = s->free_at[q];
        for (;;) {
            int64_t t = s->end[s->first[i]] + s->lat;
            int64_t m = s->more[i];
            if (m > 0) {
                int64_t r = s->end[m - 1] + s->lat;
                if (t < r)
                    t = r;
            } else if (m) {
                t = later_tokens(s, i, t);
            }
            if (t >= NEVER)
                break;
            if (t < e)
                t = e;
            s->start[i] = t;
            e = t + s->cycle[i];
            s->end[i] = e;
            s->processed[(*n_done)++] = i;
            if (s->wake[i] && woken(s, (uint64_t)s->wake[i]) < 0)
                return -1;
            i = s->following[i];
        }
        s->head[q] = i;
        s->free_at[q] = e;
    }
    return 0;
}

/* The heap queues' heads in (ready, index) order while no eager queue waits. */
static int run_heap(Loop *s, int64_t *n_done, int64_t *dram_free) {
    Entry next = heap_pop(s);
    for (;;) {
        int64_t t = next.t, i = next.i;
        int64_t q = s->queue_of[i];
        int64_t d = s->port[i];
        if (d) {
            if (t < *dram_free)
                t = *dram_free;
            *dram_free = t + d;
        }
        s->start[i] = t;
        int64_t e = t + s->cycle[i];
        s->end[i] = e;
        s->free_at[q] = e;
        s->processed[(*n_done)++] = i;
        if (s->wake[i] && woken(s, (uint64_t)s->wake[i]) < 0)
            return -1;
        i = s->head[q] = s->following[i];
        t = s->end[s->first[i]] + s->lat;
        if (t < e)
            t = e;
        int64_t m = s->more[i];
        if (m > 0) {
            int64_t r = s->end[m - 1] + s->lat;
            if (t < r)
                t = r;
        } else if (m) {
            t = later_tokens(s, i, t);
        }
        if (t >= NEVER) {
            s->in_heap[q] = 0;
            return 0;
        }
        if (s->stack_len) {
            heap_push(s, (Entry){t, i});
            return 0;
        }
        next = heap_pushpop(s, (Entry){t, i});
    }
}

/* --- arguments -------------------------------------------------------------------------- */

typedef struct {
    Py_buffer view;
    int held;
} Array;

/* A C-contiguous int64 array of `len` entries (writable if asked). */
static int get_array(PyObject *obj, Array *a, Py_ssize_t len, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &a->view, flags) < 0)
        return -1;
    a->held = 1;
    const char *f = a->view.format ? a->view.format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@')
        f++;
    if (a->view.itemsize != 8 || !(f[0] == 'q' || f[0] == 'l') || f[1] != '\0') {
        PyErr_Format(PyExc_TypeError, "run_events: %s must be an int64 array", name);
        return -1;
    }
    if (len >= 0 && a->view.len != len * 8) {
        PyErr_Format(PyExc_ValueError, "run_events: %s has %zd entries, expected %zd", name,
                     a->view.len / 8, len);
        return -1;
    }
    return 0;
}

/* Every entry of values in [low, high]. */
static int in_range(const Array *a, int64_t low, int64_t high, const char *name) {
    const int64_t *v = a->view.buf;
    Py_ssize_t len = a->view.len / 8;
    for (Py_ssize_t k = 0; k < len; k++) {
        if (v[k] < low || v[k] > high) {
            PyErr_Format(PyExc_ValueError, "run_events: %s[%zd] = %lld is out of range", name, k,
                         (long long)v[k]);
            return -1;
        }
    }
    return 0;
}

enum { QUEUE_OF, FIRST, MORE, EXTRA_START, EXTRA_FLAT, FOLLOWING, CYCLE, PORT, WAKE, HEAD,
       START, END, PROCESSED, N_ARRAYS };

static const char *const NAMES[N_ARRAYS] = {
    "queue_of", "first", "more", "extra_start", "extra_flat", "following", "cycle", "port",
    "wake", "head", "start", "end", "processed"};

/* Extra producers of instruction i (more[i] == -1) lie inside extra_flat, in order. */
static int check_extra(const Array *a, int64_t n) {
    const int64_t *more = a[MORE].view.buf, *bounds = a[EXTRA_START].view.buf;
    int64_t n_flat = a[EXTRA_FLAT].view.len / 8;
    for (int64_t i = 0; i < n; i++) {
        if (bounds[i] < 0 || bounds[i] > bounds[i + 1] || bounds[i + 1] > n_flat ||
            (more[i] == -1 && bounds[i] == bounds[i + 1])) {
            PyErr_Format(PyExc_ValueError, "run_events: extra_start[%lld] is out of range",
                         (long long)i);
            return -1;
        }
    }
    return 0;
}

static int check_arrays(Array *a, PyObject **objs, int64_t n, int64_t nq) {
    const Py_ssize_t lengths[N_ARRAYS] = {n, n + 1, n + 1, n + 1, -1, n, n, n, n, nq, n, n + 2,
                                          n};
    for (int k = 0; k < N_ARRAYS; k++)
        if (get_array(objs[k], &a[k], lengths[k], k >= HEAD, NAMES[k]) < 0)
            return -1;
    if (in_range(&a[QUEUE_OF], 0, nq - 1, "queue_of") < 0 ||
        in_range(&a[FIRST], 0, n + 1, "first") < 0 || in_range(&a[MORE], -1, n + 1, "more") < 0 ||
        in_range(&a[EXTRA_FLAT], 0, n + 1, "extra_flat") < 0 ||
        in_range(&a[FOLLOWING], 0, n, "following") < 0 || in_range(&a[HEAD], 0, n, "head") < 0 ||
        in_range(&a[WAKE], 0, (int64_t)((UINT64_C(1) << nq) - 1), "wake") < 0)
        return -1;
    const int64_t *first = a[FIRST].view.buf, *more = a[MORE].view.buf;
    if (first[n] != n || more[n] != 0) { /* the end-of-queue sentinel is never ready */
        PyErr_SetString(PyExc_ValueError, "run_events: first[n] must be n and more[n] 0");
        return -1;
    }
    return check_extra(a, n);
}

static PyObject *run_events(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[N_ARRAYS];
    unsigned long long eager;
    long long lat;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOKLOOOO:run_events", &objs[QUEUE_OF], &objs[FIRST],
                          &objs[MORE], &objs[EXTRA_START], &objs[EXTRA_FLAT], &objs[FOLLOWING],
                          &objs[CYCLE], &objs[PORT], &objs[WAKE], &eager, &lat, &objs[HEAD],
                          &objs[START], &objs[END], &objs[PROCESSED]))
        return NULL;
    Array a[N_ARRAYS];
    memset(a, 0, sizeof a);
    Loop s;
    memset(&s, 0, sizeof s);
    PyObject *result = NULL;
    int64_t n = -1, nq = -1, n_done = 0, dram_free = 0;
    if (get_array(objs[QUEUE_OF], &a[QUEUE_OF], -1, 0, NAMES[QUEUE_OF]) < 0 ||
        get_array(objs[HEAD], &a[HEAD], -1, 1, NAMES[HEAD]) < 0)
        goto done;
    n = a[QUEUE_OF].view.len / 8;
    nq = a[HEAD].view.len / 8;
    PyBuffer_Release(&a[QUEUE_OF].view);
    PyBuffer_Release(&a[HEAD].view);
    a[QUEUE_OF].held = a[HEAD].held = 0;
    if (nq < 1 || nq > 63 || lat < 0 || lat > NEVER) {
        PyErr_SetString(PyExc_ValueError, "run_events: needs 1 to 63 queues and 0 <= lat");
        goto done;
    }
    if (check_arrays(a, objs, n, nq) < 0)
        goto done;
    s.queue_of = a[QUEUE_OF].view.buf, s.first = a[FIRST].view.buf, s.more = a[MORE].view.buf;
    s.extra_start = a[EXTRA_START].view.buf, s.extra_flat = a[EXTRA_FLAT].view.buf;
    s.following = a[FOLLOWING].view.buf, s.cycle = a[CYCLE].view.buf;
    s.port = a[PORT].view.buf, s.wake = a[WAKE].view.buf, s.head = a[HEAD].view.buf;
    s.start = a[START].view.buf, s.end = a[END].view.buf, s.processed = a[PROCESSED].view.buf;
    s.eager = (uint64_t)eager & ((UINT64_C(1) << nq) - 1);
    s.lat = lat;
    s.free_at = PyMem_Calloc((size_t)nq, sizeof(int64_t));
    s.in_heap = PyMem_Calloc((size_t)nq, 1);
    s.heap = PyMem_Calloc((size_t)nq, sizeof(Entry));
    s.stack_cap = 2 * nq + 16;
    s.stack = PyMem_Malloc((size_t)s.stack_cap * sizeof(int64_t));
    if (!s.free_at || !s.in_heap || !s.heap || !s.stack) {
        PyErr_NoMemory();
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        s.end[i] = NEVER;
    s.end[n] = NEVER;
    s.end[n + 1] = -lat;
    for (int64_t q = 0; q < nq; q++)
        if (s.eager >> q & 1)
            s.stack[s.stack_len++] = q;
    if (woken(&s, ~s.eager & ((UINT64_C(1) << nq) - 1)) < 0)
        goto done;
    for (;;) {
        if (run_eager(&s, &n_done) < 0)
            goto done;
        if (!s.heap_len)
            break;
        if (run_heap(&s, &n_done, &dram_free) < 0)
            goto done;
    }
    result = PyLong_FromLongLong(n_done);
done:
    for (int k = 0; k < N_ARRAYS; k++)
        if (a[k].held)
            PyBuffer_Release(&a[k].view);
    PyMem_Free(s.free_at);
    PyMem_Free(s.in_heap);
    PyMem_Free(s.heap);
    PyMem_Free(s.stack);
    return result;
}

static PyMethodDef methods[] = {
    {"run_events", run_events, METH_VARARGS,
     "run_events(queue_of, first, more, extra_start, extra_flat, following, cycle, port, wake, "
     "eager_mask, lat, head, start, end, processed) -> instructions timed: the timing model's "
     "event loop (timing_events.run_events_python) on int64 arrays."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_timing_loop",
                                    "The timing model's event loop, compiled.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__timing_loop(void) { return PyModule_Create(&module); }
