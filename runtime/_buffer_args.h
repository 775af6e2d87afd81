/* Buffer arguments of the compiled loops (runtime/_sfu_loops.c, runtime/_softmax_loops.c):
 * one check of a numpy array passed through the buffer protocol. Include after Python.h. */

#ifndef ESACT_BUFFER_ARGS_H
#define ESACT_BUFFER_ARGS_H

#include <string.h>

/* A C-contiguous buffer of one of `formats` (e.g. "d", "f", "if", "B?") and `count` items (any
 * number when count < 0); writable if asked. On failure: a ValueError naming `what`, -1. */
static int get_buffer(PyObject *obj, Py_buffer *view, const char *formats, Py_ssize_t count,
                      int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *format = view->format ? view->format : "B";
    if (format[0] == '<' || format[0] == '=')
        format++;
    if (format[0] == '\0' || format[1] != '\0' || !strchr(formats, format[0]) ||
        (count >= 0 && view->len != count * view->itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of format %s", what, count,
                     formats);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#endif
