/* The screening pass's inner loop, run without the GIL (optional; ckptscan works without it).

   Why C: the scan's Python (decoding the object graph, naming every variable) holds the
   GIL for ~8 ms on a ResNet-sized checkpoint, and a Python loop screening the shard on a
   second thread needs the GIL back after every read, checksum and test, so the two never
   really ran side by side (docs/benchmarks.md, issue 14: three threaded designs, a forked
   helper and mmap were measured and dropped). One call of this loop screens many pieces
   of the shard without touching a Python object, so a worker started as soon as the
   index is read runs beside the naming, and the caller joins it afterwards from the
   other end of the shard.

   What it does, per piece of adjacent tensors of one float type (planned in Python,
   screen.py): read the piece through the caller's window with pread, extend each
   tensor's CRC32C with the function it is given (crc32c_extend of Google's libcrc32c,
   the library google-crc32c ships: no checksum code here), and test every value for
   NaN/+-Inf by its exponent bits (all ones), which is exact for IEEE float16, float32
   and float64. Pieces are claimed one at a time from the front (direction +1) or the
   back (-1) of the plan; a side that finds its next piece claimed by the other stops.
   No allocation, no Python API: loaded with ctypes, which releases the GIL around the
   call. Built only where a C compiler is found (setup.py; optional); the Python pass in
   screen.py gives the same results without it and is used whenever this reports an
   error (a short read: the shard was truncated; an I/O error), so that every error
   message is the Python one. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t *data, size_t n);

/* 1 when any of the n values at p (element size k: 2, 4 or 8 bytes) is NaN or +-Inf.
   On x86-64 with GCC or Clang an AVX2 copy is built beside the baseline one and chosen
   when the CPU has AVX2 (the loop is ~30 % faster with 32-byte vectors than with SSE2's). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
static int has_nonfinite(const uint8_t *p, int64_t n, int k) {
    uint32_t bad = 0;
    int64_t i;
    if (k == 4) {
        for (i = 0; i < n; i++) {
            uint32_t w;
            memcpy(&w, p + 4 * i, 4);
            bad |= (w & 0x7f800000u) == 0x7f800000u;
        }
    } else if (k == 2) {
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            bad |= (h & 0x7c00u) == 0x7c00u;
        }
    } else {
        for (i = 0; i < n; i++) {
            uint64_t d;
            memcpy(&d, p + 8 * i, 8);
            bad |= (d & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        }
    }
    return bad != 0;
}

/* Read exactly n bytes at off (retrying short reads and EINTR); 0 on success, -1 on a
   read error, -2 when the file ends first. */
static int read_full(int fd, uint8_t *buf, int64_t n, int64_t off) {
    while (n > 0) {
        ssize_t got = pread(fd, buf, (size_t)n, (off_t)off);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) return -2;
        buf += got;
        n -= got;
        off += got;
    }
    return 0;
}

/* Screen pieces from one end of the plan until the other side's claims are met, *stop
   becomes non-zero, or max_bytes (> 0) have been screened in this call.

   Tensors t have offset[t], nbytes[t], item size isz[t] (2, 4, 8) and keep_at[t] (>= 0:
   copy the tensor's bytes to keep + keep_at[t]; -1: don't). Piece p holds the tensors
   first[p] .. first[p + 1] - 1, adjacent in file fd[p] and of one item size. Results per
   tensor: crc_out[t] (unmasked CRC32C) and finite_out[t] (1 all finite, 0 not). *done is
   increased (atomically) by the bytes of every piece screened. The window buf (buflen
   bytes, a multiple of 8) is this caller's alone. *next is the index of the next piece
   this side tries (0 or n_pieces - 1 on the first call), kept across calls.

   Returns 1 when this side is finished (no piece left for it), 0 when it stopped at
   max_bytes or *stop with pieces left, -1 on a read error and -2 on a short read (the
   caller then screens everything again the Python way, which names the error). */
int ckptscan_screen(const int32_t *fd, const int64_t *first, int64_t n_pieces, uint8_t *claimed, int direction,
                    const int64_t *offset, const int64_t *nbytes, const int32_t *isz, const int64_t *keep_at,
                    uint8_t *keep, uint32_t *crc_out, uint8_t *finite_out, uintptr_t crc_address,
                    uint8_t *buf, int64_t buflen, volatile int32_t *stop, int64_t *done, int64_t max_bytes,
                    int64_t *next) {
    crc_fn crc = (crc_fn)crc_address;
    int64_t screened = 0;
    int64_t step = direction >= 0 ? 1 : -1;
    int64_t p = *next;
    for (; p >= 0 && p < n_pieces; p += step) {
        *next = p;
        if (*stop || (max_bytes > 0 && screened >= max_bytes)) return 0;
        /* each side claims in its own order, so a piece the other side holds means that
           every piece beyond it is that side's too */
        if (__atomic_exchange_n(&claimed[p], (uint8_t)1, __ATOMIC_ACQ_REL)) return 1;
        int64_t t0 = first[p], t1 = first[p + 1];
        int64_t start = offset[t0], end = offset[t1 - 1] + nbytes[t1 - 1];
        int k = isz[t0];
        int64_t t = t0;
        for (int64_t i = t0; i < t1; i++) {
            crc_out[i] = 0;
            finite_out[i] = 1;
        }
        for (int64_t pos = start; pos < end;) {
            int64_t n = end - pos < buflen ? end - pos : buflen;
            int r = read_full(fd[p], buf, n, pos);
            if (r != 0) return r == -2 ? -2 : -1;
            int64_t wend = pos + n;
            /* every tensor overlapping [pos, wend): its part of the window */
            for (; t < t1; t++) {
                int64_t a = offset[t] > pos ? offset[t] : pos;
                int64_t z = offset[t] + nbytes[t] < wend ? offset[t] + nbytes[t] : wend;
                if (a < z) {
                    const uint8_t *q = buf + (a - pos);
                    crc_out[t] = crc(crc_out[t], q, (size_t)(z - a));
                    if (finite_out[t] && has_nonfinite(q, (z - a) / k, k)) finite_out[t] = 0;
                    if (keep_at[t] >= 0) memcpy(keep + keep_at[t] + (a - offset[t]), q, (size_t)(z - a));
                }
                if (offset[t] + nbytes[t] > wend) break;  /* continues in the next window */
            }
            pos = wend;
            if (*stop && pos < end) return 0;  /* abandoned mid-piece: the caller discards it */
        }
        __atomic_fetch_add(done, end - start, __ATOMIC_RELAXED);
        screened += end - start;
    }
    *next = p;
    return 1;
}

/* A module with no functions: it exists so that the build makes (and pip installs) a
   shared library beside screen.py, found and loaded with ctypes. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_screen", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__screen(void) { return PyModule_Create(&module); }
