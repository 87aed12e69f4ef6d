/* Format 3's record leaves for a whole batch in one call: keyed BLAKE2s-256 (RFC 7693) of each
 * locator, personalised, sorted. The same bytes as hashlib.blake2s(locator, key=key,
 * person=person).digest() per locator, then sorted (retention/audit/leaves.py); about a
 * quarter of the time that costs from Python, where each record is three method calls.
 *
 * blake2s_leaves(key, person, prefix, lines) -> list[bytes]
 *   key     1 to 32 bytes;  person  8 bytes (or fewer, zero-padded, as hashlib does)
 *   prefix  bytes every locator starts with;  lines  the rest of each locator, joined by "\n"
 *           (a locator never holds a newline: its key parts are percent-encoded)
 * returns the 32-byte leaves of prefix + line for each line, sorted.
 *
 * blake2s_packed(key, person, prefix, lines) -> bytes
 *   the same leaves in the lines' order, concatenated (no object per leaf);
 * sorted_leaves(data) -> bytes          those leaves (of many pieces, joined) sorted;
 * repeated_leaves(data) -> int          how many sorted leaves equal the one before.
 * integer_lines(keys) -> bytes | None   a batch's integer ids spelled as its locators' ends.
 * A whole partition's leaves stay one bytes object from its keys to its leaves file
 * (retention/audit/leaves.py, PackedLeaves).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 64
#define OUT 32

static const uint32_t IV[8] = {0x6A09E667UL, 0xBB67AE85UL, 0x3C6EF372UL, 0xA54FF53AUL,
                               0x510E527FUL, 0x9B05688CUL, 0x1F83D9ABUL, 0x5BE0CD19UL};

static const uint8_t SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

typedef struct {
    uint32_t h[8];
    uint32_t t[2];
    uint8_t buffer[BLOCK];
    size_t filled;
} state_t;

static uint32_t load32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void store32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

#define G(a, b, c, d, x, y)          \
    do {                             \
        a = a + b + (x);             \
        d = rotr(d ^ a, 16);         \
        c = c + d;                   \
        b = rotr(b ^ c, 12);         \
        a = a + b + (y);             \
        d = rotr(d ^ a, 8);          \
        c = c + d;                   \
        b = rotr(b ^ c, 7);          \
    } while (0)

static void compress(state_t *s, const uint8_t *block, int last) {
    uint32_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = load32(block + 4 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= s->t[0];
    v[13] ^= s->t[1];
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 10; r++) {
        const uint8_t *z = SIGMA[r];
        G(v[0], v[4], v[8], v[12], m[z[0]], m[z[1]]);
        G(v[1], v[5], v[9], v[13], m[z[2]], m[z[3]]);
        G(v[2], v[6], v[10], v[14], m[z[4]], m[z[5]]);
        G(v[3], v[7], v[11], v[15], m[z[6]], m[z[7]]);
        G(v[0], v[5], v[10], v[15], m[z[8]], m[z[9]]);
        G(v[1], v[6], v[11], v[12], m[z[10]], m[z[11]]);
        G(v[2], v[7], v[8], v[13], m[z[12]], m[z[13]]);
        G(v[3], v[4], v[9], v[14], m[z[14]], m[z[15]]);
    }
    for (int i = 0; i < 8; i++) s->h[i] ^= v[i] ^ v[i + 8];
}

static void count(state_t *s, uint32_t bytes) {
    s->t[0] += bytes;
    if (s->t[0] < bytes) s->t[1]++;
}

/* Absorb data, always keeping the last (possibly full) block buffered for the final one. */
static void update(state_t *s, const uint8_t *data, size_t length) {
    while (length > 0) {
        if (s->filled == BLOCK) {
            count(s, BLOCK);
            compress(s, s->buffer, 0);
            s->filled = 0;
        }
        size_t take = BLOCK - s->filled;
        if (take > length) take = length;
        memcpy(s->buffer + s->filled, data, take);
        s->filled += take;
        data += take;
        length -= take;
    }
}

static void finish(state_t *s, uint8_t *out) {
    count(s, (uint32_t)s->filled);
    memset(s->buffer + s->filled, 0, BLOCK - s->filled);
    compress(s, s->buffer, 1);
    for (int i = 0; i < 8; i++) store32(out + 4 * i, s->h[i]);
}

/* Many records at once: where the compiler has vector types (GCC, Clang), LANES records whose
 * locators end within the block after the prefix are hashed side by side, each in its own
 * lane of the same instructions (one final compression each, from the same keyed state); on
 * x86-64 with AVX2 (chosen as the module loads) eight lanes are one register. A longer
 * locator is hashed alone. The same bytes either way (tests/test_audit_leaf_batches.py). */
#if defined(__GNUC__)
#define LANES 8
typedef uint32_t lanes_t __attribute__((vector_size(4 * LANES)));

#define VROT(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define VG(a, b, c, d, x, y)         \
    do {                             \
        a = a + b + (x);             \
        d = VROT(d ^ a, 16);         \
        c = c + d;                   \
        b = VROT(b ^ c, 12);         \
        a = a + b + (y);             \
        d = VROT(d ^ a, 8);          \
        c = c + d;                   \
        b = VROT(b ^ c, 7);          \
    } while (0)
#define VROUND(r)                                                           \
    do {                                                                    \
        VG(v[0], v[4], v[8], v[12], m[SIGMA[r][0]], m[SIGMA[r][1]]);        \
        VG(v[1], v[5], v[9], v[13], m[SIGMA[r][2]], m[SIGMA[r][3]]);        \
        VG(v[2], v[6], v[10], v[14], m[SIGMA[r][4]], m[SIGMA[r][5]]);       \
        VG(v[3], v[7], v[11], v[15], m[SIGMA[r][6]], m[SIGMA[r][7]]);       \
        VG(v[0], v[5], v[10], v[15], m[SIGMA[r][8]], m[SIGMA[r][9]]);       \
        VG(v[1], v[6], v[11], v[12], m[SIGMA[r][10]], m[SIGMA[r][11]]);     \
        VG(v[2], v[7], v[8], v[13], m[SIGMA[r][12]], m[SIGMA[r][13]]);      \
        VG(v[3], v[4], v[9], v[14], m[SIGMA[r][14]], m[SIGMA[r][15]]);      \
    } while (0)

#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
/* The final compression of LANES records from the same state h (after its counter t), each
 * record's last block in blocks (its bytes counted in lengths), each leaf into out[lane]. */
static void compress_lanes(const uint32_t h[8], const uint32_t t[2], const uint8_t *blocks,
                           const uint32_t lengths[LANES], uint8_t *const out[LANES]) {
    lanes_t m[16], v[16];
    uint32_t words[16][LANES];
    for (int lane = 0; lane < LANES; lane++)
        for (int i = 0; i < 16; i++) words[i][lane] = load32(blocks + lane * BLOCK + 4 * i);
    memcpy(m, words, sizeof m);
    uint32_t low[LANES], high[LANES];
    for (int lane = 0; lane < LANES; lane++) {
        low[lane] = t[0] + lengths[lane];
        high[lane] = t[1] + (low[lane] < t[0]);
    }
    for (int i = 0; i < 8; i++) {
        v[i] = (lanes_t){0} + h[i];
        v[i + 8] = (lanes_t){0} + IV[i];
    }
    lanes_t counter;
    memcpy(&counter, low, sizeof counter);
    v[12] ^= counter;
    memcpy(&counter, high, sizeof counter);
    v[13] ^= counter;
    v[14] = ~v[14];
    VROUND(0);
    VROUND(1);
    VROUND(2);
    VROUND(3);
    VROUND(4);
    VROUND(5);
    VROUND(6);
    VROUND(7);
    VROUND(8);
    VROUND(9);
    uint32_t result[8][LANES];
    for (int i = 0; i < 8; i++) {
        lanes_t word = ((lanes_t){0} + h[i]) ^ v[i] ^ v[i + 8];
        memcpy(result[i], &word, sizeof word);
    }
    for (int lane = 0; lane < LANES; lane++)
        for (int i = 0; i < 8; i++) store32(out[lane] + 4 * i, result[i][lane]);
}
#endif

static uint64_t load64_big(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static int compare_leaves(const void *left, const void *right) { return memcmp(left, right, OUT); }

/* Sort count leaves in place. Leaves are uniformly random, so their first 8 bytes, as one
 * big-endian number, order them but for a 2^-64 chance: a radix sort of those numbers (8
 * passes of a byte; qsort's 60,000 comparisons for 5,000 leaves cost as much as hashing them),
 * then one pass that checks the whole order with memcmp and falls back to qsort if two leaves
 * sharing their first 8 bytes came out of order, or if memory is short. */
static void sort_leaves(uint8_t *leaves, size_t count) {
    uint64_t *keys = (uint64_t *)malloc(count * 2 * sizeof(uint64_t));
    uint32_t *order = (uint32_t *)malloc(count * 2 * sizeof(uint32_t));
    uint8_t *sorted = (uint8_t *)malloc(count * OUT);
    if (keys == NULL || order == NULL || sorted == NULL || count > UINT32_MAX) {
        free(keys);
        free(order);
        free(sorted);
        qsort(leaves, count, OUT, compare_leaves);
        return;
    }
    uint64_t *keys_to = keys + count;
    uint32_t *order_to = order + count;
    for (size_t i = 0; i < count; i++) {
        keys[i] = load64_big(leaves + i * OUT);
        order[i] = (uint32_t)i;
    }
    for (int shift = 0; shift < 64; shift += 8) {
        size_t positions[256] = {0};
        for (size_t i = 0; i < count; i++) positions[(keys[i] >> shift) & 255]++;
        size_t total = 0;
        for (int digit = 0; digit < 256; digit++) {
            size_t here = positions[digit];
            positions[digit] = total;
            total += here;
        }
        for (size_t i = 0; i < count; i++) {
            size_t to = positions[(keys[i] >> shift) & 255]++;
            keys_to[to] = keys[i];
            order_to[to] = order[i];
        }
        uint64_t *swap_keys = keys;
        keys = keys_to;
        keys_to = swap_keys;
        uint32_t *swap_order = order;
        order = order_to;
        order_to = swap_order;
    }
    /* After 8 passes (an even number) keys and order are back in their first halves. */
    for (size_t i = 0; i < count; i++) memcpy(sorted + i * OUT, leaves + (size_t)order[i] * OUT, OUT);
    memcpy(leaves, sorted, count * OUT);
    free(keys);
    free(order);
    free(sorted);
    for (size_t i = 1; i < count; i++) {
        if (memcmp(leaves + (i - 1) * OUT, leaves + i * OUT, OUT) > 0) {
            qsort(leaves, count, OUT, compare_leaves);
            return;
        }
    }
}

/* Check the key and person; return the number of lines (newlines + 1), or -1 with an error set. */
static Py_ssize_t lines_to_hash(const Py_buffer *key, const Py_buffer *person, const Py_buffer *lines) {
    if (key->len < 1 || key->len > 32 || person->len > 8) {
        PyErr_SetString(PyExc_ValueError, "a key of 1 to 32 bytes and a person of at most 8");
        return -1;
    }
    Py_ssize_t total = 1;
    const uint8_t *text = (const uint8_t *)lines->buf, *end = text + lines->len;
    while ((text = memchr(text, '\n', (size_t)(end - text))) != NULL) {
        total++;
        text++;
    }
    return total;
}

/* Whether the buffers' bytes cannot change while the GIL is let go: those of bytes objects.
 * A bytearray (or a view of one) that another thread rewrites meanwhile would be hashed in
 * neither state, its lines no longer those counted (a line gone: a read past its end). */
static int unchanging(const Py_buffer *const buffers[], int count) {
    for (int i = 0; i < count; i++)
        if (buffers[i]->obj == NULL || !PyBytes_CheckExact(buffers[i]->obj)) return 0;
    return 1;
}

/* The leaf of prefix + each of the total lines, in their order, into leaves (total * OUT
 * bytes). Runs without the GIL: it touches no Python object (its buffers those of bytes
 * objects, unchanging). */
static void hash_lines(const Py_buffer *key, const Py_buffer *person, const Py_buffer *prefix,
                       const Py_buffer *lines, Py_ssize_t total, uint8_t *leaves) {
    /* The parameter block: digest length, key length, fanout 1, depth 1, personalisation. */
    uint8_t parameters[32] = {OUT, (uint8_t)key->len, 1, 1};
    memcpy(parameters + 24, person->buf, (size_t)person->len);
    state_t keyed;
    memset(&keyed, 0, sizeof keyed);
    for (int i = 0; i < 8; i++) keyed.h[i] = IV[i] ^ load32(parameters + 4 * i);
    memcpy(keyed.buffer, key->buf, (size_t)key->len);
    keyed.filled = BLOCK;
    update(&keyed, (const uint8_t *)prefix->buf, (size_t)prefix->len);
    const uint8_t *start = (const uint8_t *)lines->buf, *end = start + lines->len;
#if defined(LANES)
    /* The records in lanes: each one's last block, built from the prefix's end and its line. */
    uint8_t blocks[LANES * BLOCK];
    uint32_t lengths[LANES];
    uint8_t *out[LANES];
    int filled = 0;
#endif
    for (Py_ssize_t index = 0; index < total; index++) {
        if (start > end) start = end; /* fewer lines than counted: never past the end */
        const uint8_t *stop = memchr(start, '\n', (size_t)(end - start));
        if (stop == NULL) stop = end;
        size_t length = (size_t)(stop - start);
        uint8_t *leaf = leaves + (size_t)index * OUT;
#if defined(LANES)
        if (keyed.filled + length <= BLOCK) {
            uint8_t *block = blocks + filled * BLOCK;
            memcpy(block, keyed.buffer, keyed.filled);
            memcpy(block + keyed.filled, start, length);
            memset(block + keyed.filled + length, 0, BLOCK - keyed.filled - length);
            lengths[filled] = (uint32_t)(keyed.filled + length);
            out[filled++] = leaf;
            if (filled == LANES) {
                compress_lanes(keyed.h, keyed.t, blocks, lengths, out);
                filled = 0;
            }
            start = stop + 1;
            continue;
        }
#endif
        state_t record = keyed;
        update(&record, start, length);
        finish(&record, leaf);
        start = stop + 1;
    }
#if defined(LANES)
    if (filled > 0) {
        /* The last lanes: empty ones repeat the first record, their leaves written to a spare. */
        uint8_t spare[OUT];
        for (int lane = filled; lane < LANES; lane++) {
            memcpy(blocks + lane * BLOCK, blocks, BLOCK);
            lengths[lane] = lengths[0];
            out[lane] = spare;
        }
        compress_lanes(keyed.h, keyed.t, blocks, lengths, out);
    }
#endif
}

static PyObject *blake2s_leaves(PyObject *module, PyObject *args) {
    Py_buffer key, person, prefix, lines;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &key, &person, &prefix, &lines)) return NULL;
    PyObject *result = NULL;
    uint8_t *leaves = NULL;
    Py_ssize_t total = lines_to_hash(&key, &person, &lines);
    if (total < 0) goto done;
    leaves = (uint8_t *)malloc((size_t)total * OUT);
    if (leaves == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const Py_buffer *const given[] = {&key, &person, &prefix, &lines};
    PyThreadState *released = unchanging(given, 4) ? PyEval_SaveThread() : NULL;
    hash_lines(&key, &person, &prefix, &lines, total, leaves);
    sort_leaves(leaves, (size_t)total);
    if (released != NULL) PyEval_RestoreThread(released);
    result = PyList_New(total);
    if (result == NULL) goto done;
    for (Py_ssize_t index = 0; index < total; index++) {
        PyObject *leaf = PyBytes_FromStringAndSize((const char *)leaves + (size_t)index * OUT, OUT);
        if (leaf == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, index, leaf);
    }
done:
    free(leaves);
    PyBuffer_Release(&key);
    PyBuffer_Release(&person);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&lines);
    return result;
}

/* The same leaves as blake2s_leaves, in the lines' order (not sorted), as one bytes object:
 * no object per leaf (sorted_leaves sorts them, a batch's pieces joined, in one call). */
static PyObject *blake2s_packed(PyObject *module, PyObject *args) {
    Py_buffer key, person, prefix, lines;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &key, &person, &prefix, &lines)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t total = lines_to_hash(&key, &person, &lines);
    if (total >= 0) result = PyBytes_FromStringAndSize(NULL, total * OUT);
    if (result != NULL) {
        /* Not shared with anyone before it is returned: written in place, without the GIL. */
        uint8_t *leaves = (uint8_t *)PyBytes_AS_STRING(result);
        const Py_buffer *const given[] = {&key, &person, &prefix, &lines};
        PyThreadState *released = unchanging(given, 4) ? PyEval_SaveThread() : NULL;
        hash_lines(&key, &person, &prefix, &lines, total, leaves);
        if (released != NULL) PyEval_RestoreThread(released);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&person);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&lines);
    return result;
}

static PyObject *sorted_leaves(PyObject *module, PyObject *args) {
    Py_buffer data;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    PyObject *result = NULL;
    if (data.len % OUT != 0) {
        PyErr_SetString(PyExc_ValueError, "leaves of 32 bytes each");
    } else {
        result = PyBytes_FromStringAndSize((const char *)data.buf, data.len);
        if (result != NULL && data.len > 0) {
            uint8_t *leaves = (uint8_t *)PyBytes_AS_STRING(result);
            Py_BEGIN_ALLOW_THREADS
            sort_leaves(leaves, (size_t)(data.len / OUT));
            Py_END_ALLOW_THREADS
        }
    }
    PyBuffer_Release(&data);
    return result;
}

static PyObject *repeated_leaves(PyObject *module, PyObject *args) {
    Py_buffer data;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    PyObject *result = NULL;
    if (data.len % OUT != 0) {
        PyErr_SetString(PyExc_ValueError, "leaves of 32 bytes each");
    } else {
        const uint8_t *leaves = (const uint8_t *)data.buf;
        Py_ssize_t count = data.len / OUT, repeated = 0;
        for (Py_ssize_t i = 1; i < count; i++)
            repeated += memcmp(leaves + (i - 1) * OUT, leaves + i * OUT, OUT) == 0;
        result = PyLong_FromSsize_t(repeated);
    }
    PyBuffer_Release(&data);
    return result;
}

/* integer_lines(keys) -> bytes | None: the keys' values spelled in decimal, joined by "\n",
 * when keys is a non-empty list or tuple of 1-tuples each holding an int (exactly int, not a
 * bool) between -2^63 and 2^63 - 1; else None, and the caller spells them itself. The same
 * bytes as str() of each value joined by newlines (retention/audit/leaves.py,
 * integer_key_lines). Every object is read with the GIL held. */
static PyObject *integer_lines(PyObject *module, PyObject *args) {
    PyObject *keys;
    (void)module;
    if (!PyArg_ParseTuple(args, "O", &keys)) return NULL;
    if (!PyList_CheckExact(keys) && !PyTuple_CheckExact(keys)) Py_RETURN_NONE;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(keys);
    if (count == 0 || count > PY_SSIZE_T_MAX / 21) Py_RETURN_NONE;
    /* At most 20 characters a value ("-9223372036854775808") and a newline. */
    char *text = PyMem_Malloc((size_t)count * 21);
    if (text == NULL) return PyErr_NoMemory();
    PyObject **items = PySequence_Fast_ITEMS(keys);
    size_t length = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = items[i];
        if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 1) goto unhandled;
        PyObject *value = PyTuple_GET_ITEM(key, 0);
        if (!PyLong_CheckExact(value)) goto unhandled;
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow != 0) goto unhandled;
        if (number == -1 && PyErr_Occurred()) {
            PyMem_Free(text);
            return NULL;
        }
        if (i > 0) text[length++] = '\n';
        unsigned long long magnitude =
            number < 0 ? 0ULL - (unsigned long long)number : (unsigned long long)number;
        char digits[20];
        int used = 0;
        do {
            digits[used++] = (char)('0' + magnitude % 10);
            magnitude /= 10;
        } while (magnitude != 0);
        if (number < 0) text[length++] = '-';
        while (used > 0) text[length++] = digits[--used];
    }
    PyObject *result = PyBytes_FromStringAndSize(text, (Py_ssize_t)length);
    PyMem_Free(text);
    return result;
unhandled:
    PyMem_Free(text);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"blake2s_leaves", blake2s_leaves, METH_VARARGS,
     "blake2s_leaves(key, person, prefix, lines) -> the sorted keyed BLAKE2s-256 of prefix + "
     "each newline-separated line."},
    {"blake2s_packed", blake2s_packed, METH_VARARGS,
     "blake2s_packed(key, person, prefix, lines) -> the keyed BLAKE2s-256 of prefix + each "
     "newline-separated line, concatenated, in the lines' order."},
    {"sorted_leaves", sorted_leaves, METH_VARARGS,
     "sorted_leaves(data) -> the 32-byte leaves of data, concatenated, sorted."},
    {"repeated_leaves", repeated_leaves, METH_VARARGS,
     "repeated_leaves(data) -> how many of the sorted 32-byte leaves of data equal the one "
     "before."},
    {"integer_lines", integer_lines, METH_VARARGS,
     "integer_lines(keys) -> the values of 1-tuples of int64 ints in decimal, joined by "
     "newlines; None for any other keys."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_leaves", NULL, -1, methods};

PyMODINIT_FUNC PyInit__leaves(void) { return PyModule_Create(&definition); }
