/* The timing model's event simulation compiled: token matching, the event loop and the stall
 * causes of the finished schedule, as timing_events_python.py does them (the reference;
 * timing_events.py says what the loop does and why its order of events is what it is), on
 * contiguous int64 arrays passed through the buffer protocol. It gives the same start and end
 * times, final queue heads, processing order, ready times and stalls as the Python code
 * (test/unit/timing/test_compiled_event_loop.py); the Python side checks that no time can
 * overflow int64 (timing_events._check_no_overflow).
 *
 * run_events(queues, pops, pushes, cycles, dram, eager_mask, lat,
 *            head, start, end, processed, ready, stall, busy) -> number of instructions timed
 *   in:  queues, pops, pushes, cycles, dram: n entries each; nq = len(head) queues;
 *        eager_mask: queues timed as soon as their tokens are in (the others: a heap in
 *        (ready, index) order); lat: token latency (>= 0)
 *   out: head[nq] (each queue's first untimed instruction, n when done), start[n], end[n + 2]
 *        (end[n] = NEVER: the producer of a token never pushed; end[n + 1] = -lat), processed[n]
 *        (the timing order); when every instruction was timed, ready[n],
 *        stall[nq * (nq + 1)] (row: queue, column: token source queue or nq for the DRAM port)
 *        and busy[nq] (each queue's cycles)
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
    int64_t n, nq, lat;
    uint64_t eager;
    const int64_t *queue_of, *cycle, *port;
    uint64_t *wake;        /* queues other than its own an instruction's tokens go to */
    int64_t *following;    /* next instruction of the same queue (n after the last) */
    int64_t *pop_start;    /* producers of instruction i: producer[pop_start[i]:pop_start[i+1]] */
    int64_t *producer;     /* in pop-bit order; n: never pushed (the sentinel n pops that) */
    int64_t *head, *start, *end, *processed, *free_at;
    char *in_heap;
    Entry *heap; /* a binary heap ordered by (t, i); at most one entry per queue */
    int64_t heap_len;
    int64_t *stack; /* eager queues to try again (LIFO, duplicates allowed, as in Python) */
    int64_t stack_len, stack_cap;
    int64_t n_done, dram_free;
} Loop;

/* --- heap and stack ------------------------------------------------------------------------ */

static inline int entry_less(Entry a, Entry b) {
    return a.t < b.t || (a.t == b.t && a.i < b.i);
}

static void sift_down(Entry *heap, int64_t len, int64_t k) {
    Entry item = heap[k];
    for (;;) {
        int64_t child = 2 * k + 1;
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
    int64_t k = s->heap_len++;
    while (k > 0) {
        int64_t parent = (k - 1) / 2;
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
        int64_t cap = 2 * s->stack_cap;
        int64_t *grown = PyMem_RawRealloc(s->stack, (size_t)cap * sizeof(int64_t));
        if (!grown)
            return -1;
        s->stack = grown;
        s->stack_cap = cap;
    }
    s->stack[s->stack_len++] = q;
    return 0;
}

/* --- the loop ------------------------------------------------------------------------------ */

/* When all of instruction i's tokens have arrived (0 if it pops none; >= NEVER if one is not
 * pushed yet). */
static inline int64_t tokens_in(const Loop *s, int64_t i) {
    int64_t k = s->pop_start[i], last = s->pop_start[i + 1];
    if (k == last)
        return 0;
    int64_t t = s->end[s->producer[k]] + s->lat;
    for (k++; k < last; k++) {
        int64_t r = s->end[s->producer[k]] + s->lat;
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
            int64_t r = tokens_in(s, h);
            if (r < s->free_at[dst])
                r = s->free_at[dst];
            if (r < NEVER) {
                heap_push(s, (Entry){r, h});
                s->in_heap[dst] = 1;
            }
        }
    }
    return 0;
}

/* Time each eager queue's heads while their tokens are all pushed. */
static int run_eager(Loop *s) {
    while (s->stack_len) {
        int64_t q = s->stack[--s->stack_len];
        int64_t i = s->head[q];
        int64_t e = s->free_at[q];
        for (;;) {
            int64_t t = tokens_in(s, i);
            if (t >= NEVER)
                break;
            if (t < e)
                t = e;
            s->start[i] = t;
            e = t + s->cycle[i];
            s->end[i] = e;
            s->processed[s->n_done++] = i;
            if (s->wake[i] && woken(s, s->wake[i]) < 0)
                return -1;
            i = s->following[i];
        }
        s->head[q] = i;
        s->free_at[q] = e;
    }
    return 0;
}

/* The heap queues' heads in (ready, index) order while no eager queue waits. */
static int run_heap(Loop *s) {
    Entry next = heap_pop(s);
    for (;;) {
        int64_t t = next.t, i = next.i;
        int64_t q = s->queue_of[i];
        int64_t d = s->port[i];
        if (d) {
            if (t < s->dram_free)
                t = s->dram_free;
            s->dram_free = t + d;
        }
        s->start[i] = t;
        int64_t e = t + s->cycle[i];
        s->end[i] = e;
        s->free_at[q] = e;
        s->processed[s->n_done++] = i;
        if (s->wake[i] && woken(s, s->wake[i]) < 0)
            return -1;
        i = s->head[q] = s->following[i];
        t = tokens_in(s, i);
        if (t < e)
            t = e;
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

static int run_loop(Loop *s) {
    for (int64_t i = 0; i < s->n; i++)
        s->end[i] = NEVER;
    s->end[s->n] = NEVER;
    s->end[s->n + 1] = -s->lat;
    uint64_t all = (UINT64_C(1) << s->nq) - 1;
    for (int64_t q = 0; q < s->nq; q++)
        if (s->eager >> q & 1)
            s->stack[s->stack_len++] = q;
    if (woken(s, ~s->eager & all) < 0)
        return -1;
    for (;;) {
        if (run_eager(s) < 0)
            return -1;
        if (!s->heap_len)
            return 0;
        if (run_heap(s) < 0)
            return -1;
    }
}

/* --- before and after the loop ------------------------------------------------------------- */

/* Queue chains, the channels' FIFO matching (the k-th pop of channel src -> dst takes the k-th
 * push, in program order), and wake masks. pop_start and producer are allocated by the
 * caller (n + 2 and total pops + 1 entries). */
static int prepare(Loop *s, const int64_t *pops, const int64_t *pushes) {
    int64_t n = s->n, nq = s->nq, channels = nq * nq;
    int64_t *last = PyMem_RawMalloc((size_t)nq * sizeof(int64_t));
    int64_t *pushed = PyMem_RawCalloc((size_t)channels + 1, sizeof(int64_t));
    int64_t *taken = PyMem_RawCalloc((size_t)channels, sizeof(int64_t));
    int64_t n_pushes = 0;
    for (int64_t i = 0; i < n; i++)
        n_pushes += __builtin_popcountll((uint64_t)pushes[i]);
    int64_t *push_list = PyMem_RawMalloc((size_t)n_pushes * sizeof(int64_t) + 1);
    if (!last || !pushed || !taken || !push_list) {
        PyMem_RawFree(last), PyMem_RawFree(pushed), PyMem_RawFree(taken);
        PyMem_RawFree(push_list);
        return -1;
    }
    for (int64_t q = 0; q < nq; q++)
        last[q] = -1, s->head[q] = n;
    for (int64_t i = 0; i < n; i++) {
        int64_t q = s->queue_of[i];
        if (last[q] < 0)
            s->head[q] = i;
        else
            s->following[last[q]] = i;
        last[q] = i;
        s->following[i] = n;
        s->wake[i] = (uint64_t)pushes[i] & ~(UINT64_C(1) << q);
        for (uint64_t w = (uint64_t)pushes[i]; w; w &= w - 1)
            pushed[q * nq + __builtin_ctzll(w) + 1]++;
    }
    for (int64_t c = 0; c < channels; c++) /* pushed[c]: where channel c's pushes start */
        pushed[c + 1] += pushed[c];
    for (int64_t i = 0; i < n; i++) {
        int64_t q = s->queue_of[i];
        for (uint64_t w = (uint64_t)pushes[i]; w; w &= w - 1)
            push_list[pushed[q * nq + __builtin_ctzll(w)] + taken[q * nq + __builtin_ctzll(w)]++] = i;
    }
    memset(taken, 0, (size_t)channels * sizeof(int64_t));
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        s->pop_start[i] = k;
        int64_t q = s->queue_of[i];
        for (uint64_t w = (uint64_t)pops[i]; w; w &= w - 1) {
            int64_t c = __builtin_ctzll(w) * nq + q;
            int64_t m = taken[c]++;
            s->producer[k++] = pushed[c] + m < pushed[c + 1] ? push_list[pushed[c] + m] : n;
        }
    }
    s->pop_start[n] = k; /* the end-of-queue sentinel n pops one token never pushed */
    s->producer[k++] = n;
    s->pop_start[n + 1] = k;
    PyMem_RawFree(last), PyMem_RawFree(pushed), PyMem_RawFree(taken), PyMem_RawFree(push_list);
    return 0;
}

/* ready[i]: when i's queue was free (the previous instruction's end) and its last token had
 * arrived; if that token came after the queue was free, i stalled that long on the token's
 * queue (the lowest among tokens arriving together); a DMA instruction then waited
 * start - ready for the DRAM port. */
static void stalls(const Loop *s, const int64_t *pops, int64_t *ready, int64_t *stall,
                   int64_t *busy) {
    int64_t nq = s->nq;
    for (int64_t q = 0; q < nq; q++)
        s->free_at[q] = 0;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t q = s->queue_of[i];
        int64_t free_at = s->free_at[q], r = free_at, cause = nq;
        int64_t k = s->pop_start[i];
        for (uint64_t w = (uint64_t)pops[i]; w; w &= w - 1, k++) {
            int64_t arrival = s->end[s->producer[k]] + s->lat;
            if (arrival > r) /* pops in queue-bit order: the lowest queue wins a tie */
                r = arrival, cause = __builtin_ctzll(w);
        }
        ready[i] = r;
        if (cause < nq)
            stall[q * (nq + 1) + cause] += r - free_at;
        if (s->port[i] > 0 && s->start[i] > r)
            stall[q * (nq + 1) + nq] += s->start[i] - r;
        s->free_at[q] = s->end[i];
        busy[q] += s->cycle[i];
    }
}

/* --- arguments ----------------------------------------------------------------------------- */

typedef struct {
    Py_buffer view;
    int held;
} Array;

/* A C-contiguous int64 array of `len` entries (any length if len < 0; writable if asked). */
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

/* Every entry of a in [low, high]. */
static int in_range(const Array *a, int64_t low, int64_t high, const char *name) {
    const int64_t *v = a->view.buf;
    for (Py_ssize_t k = 0; k < a->view.len / 8; k++) {
        if (v[k] < low || v[k] > high) {
            PyErr_Format(PyExc_ValueError, "run_events: %s[%zd] = %lld is out of range", name, k,
                         (long long)v[k]);
            return -1;
        }
    }
    return 0;
}

enum { QUEUES, POPS, PUSHES, CYCLES, DRAM, HEAD, START, END, PROCESSED, READY, STALL, BUSY,
       N_ARRAYS };

static const char *const NAMES[N_ARRAYS] = {"queues", "pops",  "pushes",    "cycles",
                                            "dram",   "head",  "start",     "end",
                                            "processed", "ready", "stall", "busy"};

static int get_arrays(Array *a, PyObject **objs, int64_t *n, int64_t *nq) {
    if (get_array(objs[QUEUES], &a[QUEUES], -1, 0, NAMES[QUEUES]) < 0 ||
        get_array(objs[HEAD], &a[HEAD], -1, 1, NAMES[HEAD]) < 0)
        return -1;
    *n = a[QUEUES].view.len / 8;
    *nq = a[HEAD].view.len / 8;
    if (*nq < 1 || *nq > 63) {
        PyErr_SetString(PyExc_ValueError, "run_events: needs 1 to 63 queues");
        return -1;
    }
    const Py_ssize_t lengths[N_ARRAYS] = {*n, *n, *n, *n, *n, *nq, *n, *n + 2, *n, *n,
                                          *nq * (*nq + 1), *nq};
    for (int k = POPS; k < N_ARRAYS; k++)
        if (k != HEAD && get_array(objs[k], &a[k], lengths[k], k >= HEAD, NAMES[k]) < 0)
            return -1;
    int64_t masks = (int64_t)((UINT64_C(1) << *nq) - 1);
    if (in_range(&a[QUEUES], 0, *nq - 1, "queues") < 0 || in_range(&a[POPS], 0, masks, "pops") < 0 ||
        in_range(&a[PUSHES], 0, masks, "pushes") < 0)
        return -1;
    return 0;
}

static PyObject *run_events(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *objs[N_ARRAYS];
    unsigned long long eager;
    long long lat;
    if (!PyArg_ParseTuple(args, "OOOOOKLOOOOOOO:run_events", &objs[QUEUES], &objs[POPS],
                          &objs[PUSHES], &objs[CYCLES], &objs[DRAM], &eager, &lat, &objs[HEAD],
                          &objs[START], &objs[END], &objs[PROCESSED], &objs[READY],
                          &objs[STALL], &objs[BUSY]))
        return NULL;
    Array a[N_ARRAYS];
    memset(a, 0, sizeof a);
    Loop s;
    memset(&s, 0, sizeof s);
    PyObject *result = NULL;
    if (get_arrays(a, objs, &s.n, &s.nq) < 0)
        goto done;
    if (lat < 0 || lat >= NEVER) {
        PyErr_SetString(PyExc_ValueError, "run_events: needs 0 <= lat < NEVER");
        goto done;
    }
    const int64_t *pops = a[POPS].view.buf, *pushes = a[PUSHES].view.buf;
    int64_t n = s.n, nq = s.nq, n_pops = 0;
    for (int64_t i = 0; i < n; i++)
        n_pops += __builtin_popcountll((uint64_t)pops[i]);
    s.lat = lat;
    s.eager = (uint64_t)eager & ((UINT64_C(1) << nq) - 1);
    s.queue_of = a[QUEUES].view.buf, s.cycle = a[CYCLES].view.buf, s.port = a[DRAM].view.buf;
    s.head = a[HEAD].view.buf, s.start = a[START].view.buf, s.end = a[END].view.buf;
    s.processed = a[PROCESSED].view.buf;
    s.wake = PyMem_RawMalloc((size_t)n * sizeof(uint64_t) + 1);
    s.following = PyMem_RawMalloc((size_t)n * sizeof(int64_t) + 1);
    s.pop_start = PyMem_RawMalloc((size_t)(n + 2) * sizeof(int64_t));
    s.producer = PyMem_RawMalloc((size_t)(n_pops + 1) * sizeof(int64_t));
    s.free_at = PyMem_RawCalloc((size_t)nq, sizeof(int64_t));
    s.in_heap = PyMem_RawCalloc((size_t)nq, 1);
    s.heap = PyMem_RawCalloc((size_t)nq, sizeof(Entry));
    s.stack_cap = 2 * nq + 16;
    s.stack = PyMem_RawMalloc((size_t)s.stack_cap * sizeof(int64_t));
    int failed = !s.wake || !s.following || !s.pop_start || !s.producer || !s.free_at ||
                 !s.in_heap || !s.heap || !s.stack;
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS
        failed = prepare(&s, pops, pushes) < 0 || run_loop(&s) < 0;
        if (!failed && s.n_done == n) {
            memset(a[STALL].view.buf, 0, (size_t)a[STALL].view.len);
            memset(a[BUSY].view.buf, 0, (size_t)a[BUSY].view.len);
            stalls(&s, pops, a[READY].view.buf, a[STALL].view.buf, a[BUSY].view.buf);
        }
        Py_END_ALLOW_THREADS
    }
    if (failed)
        PyErr_NoMemory();
    else
        result = PyLong_FromLongLong(s.n_done);
done:
    for (int k = 0; k < N_ARRAYS; k++)
        if (a[k].held)
            PyBuffer_Release(&a[k].view);
    PyMem_RawFree(s.wake), PyMem_RawFree(s.following), PyMem_RawFree(s.pop_start);
    PyMem_RawFree(s.producer), PyMem_RawFree(s.free_at), PyMem_RawFree(s.in_heap);
    PyMem_RawFree(s.heap), PyMem_RawFree(s.stack);
    return result;
}

static PyMethodDef methods[] = {
    {"run_events", run_events, METH_VARARGS,
     "run_events(queues, pops, pushes, cycles, dram, eager_mask, lat, head, start, end, "
     "processed, ready, stall, busy) -> instructions timed: the timing model's token matching, event "
     "loop and stall causes (timing_events_python.run_events_python) on int64 arrays."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_timing_loop",
                                    "The timing model's event simulation, compiled.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__timing_loop(void) { return PyModule_Create(&module); }
