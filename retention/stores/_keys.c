/* PostgreSQL keys spelled as the ends of their records' locators, from the server's binary
 * arrays (retention/stores/partition_keys_postgres.py): the server aggregates each key column
 * of a piece of a partition into one array, sent in binary (array_send); this spells each
 * row's key as record_locator spells the values psycopg gives (str() of an integer, a date or
 * a naive datetime, percent-encoded: " " as %20, ":" as %3A), its parts joined by "/", the
 * rows by "\n". The server then never writes a value as text (two thirds of its time per key
 * when it did).
 *
 * spelled_arrays(arrays) -> bytes
 *   arrays  one array_send() per key column, the same rows in the same order
 * TypeError for an element type it does not spell (then the caller asks the server for text);
 * ValueError for anything else: a NULL, a value Python's types cannot hold (a year before 1
 * or after 9999, an infinity), arrays of different lengths or not as array_send writes them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define DATEOID 1082
#define TIMESTAMPOID 1114
#define MAX_COLUMNS 32
/* The longest spelling of one value: an int8 (20), a timestamp (32: 2024-01-05%2010%3A07%3A09.123456). */
#define MAX_WIDTH 32
/* Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01. */
#define POSTGRES_EPOCH_DAYS 10957
#define DAY_MICROSECONDS 86400000000LL

typedef struct {
    const uint8_t *next, *end;
    uint32_t type;
    int64_t count;
} column_t;

static uint32_t load_big32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t load_big64(const uint8_t *p) {
    return ((uint64_t)load_big32(p) << 32) | load_big32(p + 4);
}

/* Read an array's header; 0, or -1 (not an array of one dimension without NULL), or -2 (an
 * element type not spelled here). */
static int open_column(column_t *column, const uint8_t *data, Py_ssize_t length) {
    if (length < 20) return -1;
    uint32_t dimensions = load_big32(data), nulls = load_big32(data + 4);
    column->type = load_big32(data + 8);
    if (dimensions != 1 || nulls != 0) return -1;
    column->count = (int32_t)load_big32(data + 12);
    /* Each element takes its 4-byte length at least: a count its buffer cannot hold is no
     * array (not 33 bytes a value allocated for 2^31 values, a MemoryError). */
    if (column->count < 0 || column->count > (length - 20) / 4) return -1;
    switch (column->type) {
    case INT2OID: case INT4OID: case INT8OID: case DATEOID: case TIMESTAMPOID: break;
    default: return -2;
    }
    column->next = data + 20;
    column->end = data + length;
    return 0;
}

static char *spell_digits(char *out, uint64_t value) {
    char digits[20];
    int used = 0;
    do {
        digits[used++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (used) *out++ = digits[--used];
    return out;
}

static char *spell_fixed(char *out, unsigned value, int width) {
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + value % 10);
        value /= 10;
    }
    return out + width;
}

/* Days since 1970-01-01 as YYYY-MM-DD (H. Hinnant's civil_from_days); NULL when the year is
 * not 1 to 9999 (Python's date cannot hold it). */
static char *spell_date(char *out, int64_t days) {
    if (days < -719162 || days > 2932896) return NULL; /* 0001-01-01 .. 9999-12-31 */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned day = doy - (153 * mp + 2) / 5 + 1;
    unsigned month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = (int64_t)yoe + era * 400 + (month <= 2);
    out = spell_fixed(out, (unsigned)year, 4);
    *out++ = '-';
    out = spell_fixed(out, month, 2);
    *out++ = '-';
    return spell_fixed(out, day, 2);
}

/* One value of a column; NULL when it cannot be spelled (its error left to the caller). */
static char *spell_value(char *out, column_t *column) {
    if (column->end - column->next < 4) return NULL;
    int32_t length = (int32_t)load_big32(column->next);
    const uint8_t *value = column->next + 4;
    if (length < 0 || column->end - value < length) return NULL;
    column->next = value + length;
    int64_t number;
    switch (column->type) {
    case INT2OID:
        if (length != 2) return NULL;
        number = (int16_t)(((uint16_t)value[0] << 8) | value[1]);
        break;
    case INT4OID:
        if (length != 4) return NULL;
        number = (int32_t)load_big32(value);
        break;
    case INT8OID:
        if (length != 8) return NULL;
        number = (int64_t)load_big64(value);
        break;
    case DATEOID:
        if (length != 4) return NULL;
        return spell_date(out, (int64_t)(int32_t)load_big32(value) + POSTGRES_EPOCH_DAYS);
    default: { /* TIMESTAMPOID: microseconds since 2000-01-01 (infinities beyond any date) */
        if (length != 8) return NULL;
        int64_t microseconds = (int64_t)load_big64(value);
        if (microseconds == INT64_MIN || microseconds == INT64_MAX) return NULL;
        int64_t days = microseconds / DAY_MICROSECONDS;
        int64_t rest = microseconds % DAY_MICROSECONDS;
        if (rest < 0) {
            rest += DAY_MICROSECONDS;
            days -= 1;
        }
        out = spell_date(out, days + POSTGRES_EPOCH_DAYS);
        if (out == NULL) return NULL;
        unsigned fraction = (unsigned)(rest % 1000000);
        int64_t seconds = rest / 1000000;
        memcpy(out, "%20", 3);
        out = spell_fixed(out + 3, (unsigned)(seconds / 3600), 2);
        memcpy(out, "%3A", 3);
        out = spell_fixed(out + 3, (unsigned)(seconds / 60 % 60), 2);
        memcpy(out, "%3A", 3);
        out = spell_fixed(out + 3, (unsigned)(seconds % 60), 2);
        if (fraction) {
            *out++ = '.';
            out = spell_fixed(out, fraction, 6);
        }
        return out;
    }
    }
    if (number < 0) {
        *out++ = '-';
        return spell_digits(out, (uint64_t)0 - (uint64_t)number);
    }
    return spell_digits(out, (uint64_t)number);
}

static PyObject *spelled_arrays(PyObject *module, PyObject *args) {
    PyObject *arrays;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!", &PyTuple_Type, &arrays)) return NULL;
    Py_ssize_t columns = PyTuple_GET_SIZE(arrays);
    if (columns < 1 || columns > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "one to 32 key columns");
        return NULL;
    }
    Py_buffer buffers[MAX_COLUMNS];
    column_t parsed[MAX_COLUMNS];
    Py_ssize_t opened = 0;
    PyObject *result = NULL;
    for (; opened < columns; opened++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(arrays, opened), &buffers[opened], PyBUF_SIMPLE) < 0)
            goto done;
    }
    for (Py_ssize_t index = 0; index < columns; index++) {
        int opening = open_column(&parsed[index], buffers[index].buf, buffers[index].len);
        if (opening == -2) {
            PyErr_SetString(PyExc_TypeError, "a key column of a type not spelled here");
            goto done;
        }
        if (opening < 0 || parsed[index].count != parsed[0].count) {
            PyErr_SetString(PyExc_ValueError, "the key columns' arrays do not match");
            goto done;
        }
    }
    int64_t rows = parsed[0].count;
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(rows * columns * (MAX_WIDTH + 1)));
    if (result == NULL) goto done;
    char *start = PyBytes_AS_STRING(result), *out = start;
    int failed = 0;
    /* Without the GIL only over bytes: a bytearray another thread rewrote meanwhile would be
     * spelled half before, half after (keys of neither). */
    int unchanging = 1;
    for (Py_ssize_t index = 0; index < columns; index++)
        unchanging &= buffers[index].obj != NULL && PyBytes_CheckExact(buffers[index].obj);
    PyThreadState *released = unchanging ? PyEval_SaveThread() : NULL;
    for (int64_t row = 0; row < rows && !failed; row++) {
        for (Py_ssize_t index = 0; index < columns; index++) {
            if (index) *out++ = '/';
            out = spell_value(out, &parsed[index]);
            if (out == NULL) {
                failed = 1;
                break;
            }
        }
        if (!failed) *out++ = '\n';
    }
    for (Py_ssize_t index = 0; index < columns && !failed; index++)
        failed = parsed[index].next != parsed[index].end;
    if (released != NULL) PyEval_RestoreThread(released);
    if (failed) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_ValueError, "one of its keys cannot be spelled exactly");
        goto done;
    }
    /* Without the last newline: the rows joined, as string_agg joins them. */
    _PyBytes_Resize(&result, rows ? (Py_ssize_t)(out - start) - 1 : 0);
done:
    for (Py_ssize_t index = 0; index < opened; index++) PyBuffer_Release(&buffers[index]);
    return result;
}

static PyMethodDef methods[] = {
    {"spelled_arrays", spelled_arrays, METH_VARARGS,
     "spelled_arrays(arrays) -> the rows of the key columns' binary arrays spelled as the ends "
     "of their records' locators, joined by newlines."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_keys", NULL, -1, methods};

PyMODINIT_FUNC PyInit__keys(void) { return PyModule_Create(&definition); }
