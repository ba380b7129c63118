/*
 * otel_claude.sources._linescan: the line classification of transcripts.classify_lines, and
 * the UTF-8 check of assistant_line.assistant_step, in C.
 *
 * A transcript history is mostly large user lines (tool results) that carry no usage; a
 * scan only needs to find the lines that may. The rule is defined, and documented, by the
 * pure-Python twin ``classify_lines`` in transcripts.py; this file must give the same
 * result for every input (tests/test_linescan.py compares the two). Doing the per-line
 * work here instead of in the interpreter saves about 1 us a line: a tenth of the CPU of
 * `report` over a 500 MB history.
 *
 * Optional: when it cannot be compiled the package uses the Python twin.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Keep in step with transcripts.py: _HEAD, _USAGE, _MESSAGE, _USER and the span kinds. */
#define HEAD 2048
enum { CANDIDATE = 0, NO_USAGE = 1, TOO_LONG = 2 };
static const char USAGE[] = "\"usage\"";
static const char MESSAGE[] = "\"message\":";
static const char USER[] = "\"type\":\"user\"";
#define LEN(s) ((Py_ssize_t)(sizeof(s) - 1))

/* Index of the first ``needle`` lying entirely inside [lo, hi), or -1 (bytes.find). */
static Py_ssize_t
find_in(const char *buf, Py_ssize_t lo, Py_ssize_t hi, const char *needle, Py_ssize_t n)
{
    if (hi - lo < n)
        return -1;
    const char *at = memmem(buf + lo, (size_t)(hi - lo), needle, (size_t)n);
    return at ? (Py_ssize_t)(at - buf) : -1;
}

/* Index of the last ``needle`` lying entirely inside [lo, hi), or -1 (bytes.rfind). Usage
 * closes an assistant message, a few hundred bytes before the end of its line. */
static Py_ssize_t
rfind_in(const char *buf, Py_ssize_t lo, Py_ssize_t hi, const char *needle, Py_ssize_t n)
{
    for (Py_ssize_t i = hi - n; i >= lo; i--) {
        if (buf[i] == needle[0] && memcmp(buf + i, needle, (size_t)n) == 0)
            return i;
    }
    return -1;
}

/* transcripts._is_user_line */
static int
is_user_line(const char *buf, Py_ssize_t first, Py_ssize_t last)
{
    Py_ssize_t head = first + HEAD < last ? first + HEAD : last;
    Py_ssize_t message = find_in(buf, first, head, MESSAGE, LEN(MESSAGE));
    return message > 0 && find_in(buf, first, message, USER, LEN(USER)) >= 0;
}

static inline int
is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int
add_span(PyObject *spans, int kind, Py_ssize_t first, Py_ssize_t last)
{
    PyObject *span = Py_BuildValue("(inn)", kind, first, last);
    if (span == NULL)
        return -1;
    int failed = PyList_Append(spans, span);
    Py_DECREF(span);
    return failed;
}

static PyObject *
classify_lines(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "y*n:classify_lines", &view, &max_line))
        return NULL;
    const char *buf = view.buf;
    Py_ssize_t size = view.len, start = 0, lines = 0, blank = 0, skipped = 0;
    PyObject *spans = PyList_New(0);
    if (spans == NULL)
        goto fail;
    while (start < size) {
        const char *newline = memchr(buf + start, '\n', (size_t)(size - start));
        Py_ssize_t end = newline ? (Py_ssize_t)(newline - buf) : size;
        Py_ssize_t first = start, last = end;
        lines++;
        start = end + 1;
        while (first < last && is_blank(buf[first]))
            first++;
        while (last > first && is_blank(buf[last - 1]))
            last--;
        if (first == last) {
            blank++;
            continue;
        }
        int kind;
        if ((last - first > HEAD && is_user_line(buf, first, last))
            || rfind_in(buf, first, last, USAGE, LEN(USAGE)) < 0) {
            if (buf[first] == '{' && buf[last - 1] == '}') {
                skipped++;
                continue;
            }
            kind = NO_USAGE;
        }
        else {
            kind = last - first > max_line ? TOO_LONG : CANDIDATE;
        }
        if (add_span(spans, kind, first, last) < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnnN)", lines, blank, skipped, spans);
fail:
    Py_XDECREF(spans);
    PyBuffer_Release(&view);
    return NULL;
}

/* Whether s[0:n] is valid UTF-8 by the rules of Python's strict decoder: no overlong
 * forms, no surrogates (U+D800..U+DFFF), nothing past U+10FFFF, no truncated sequence.
 * Text is mostly ASCII, taken eight bytes at a time. */
static int
utf8_valid(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if ((word & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
        }
        else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80)
                return 0;
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
                return 0;
            if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F))
                return 0; /* overlong; surrogate */
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80
                || (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))
                return 0; /* overlong; past U+10FFFF */
            i += 4;
        }
        else {
            return 0; /* a continuation byte first, 0xC0/0xC1, or 0xF5..0xFF */
        }
    }
    return 1;
}

/* is_utf8(data): bytes.decode() would succeed. Half the lines that carry usage hold some
 * non-ASCII text; decoding one only to check it cost 1 us (a str built and dropped). */
static PyObject *
is_utf8(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int valid = utf8_valid(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(valid);
}

static PyMethodDef methods[] = {
    {"classify_lines", classify_lines, METH_VARARGS,
     "classify_lines(data, max_line) -> (lines, blank, skipped, spans); see transcripts.py"},
    {"is_utf8", is_utf8, METH_O, "is_utf8(data) -> whether data.decode() would succeed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_linescan", "Transcript line classification in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__linescan(void)
{
    return PyModule_Create(&module);
}
