/* Per-position matrix products of the non-stationary layers (symprior.nn.nonstationary), float32.
 *
 * Compiled at first use by symprior/nn/_native.py (-O3 -march=native -fopenmp) and called through
 * ctypes; the layers fall back to torch's batched products when no compiler is found. Layouts
 * are those of symprior.nn._nonstationary_geometry.RowLayout: an image is stored flat as
 * (length, C, B), batch last, and grid position p reads the pixels of disk row j from address
 * p + start[j] on, count[j] consecutive pixels, i.e. the contiguous (count[j] * C, B) block at
 * (p + start[j]) * C * B. The kernel of the (position, offset) pair s, a (Cin, Cout) matrix, sits
 * at s * Cin * Cout, pairs in row-blocked order: disk row by disk row, position-major within a
 * row (pair (p, u) of row j is first[j] * grid + p * count[j] + u).
 *
 * Both products vectorise over the batch: a register tile holds MR output channels times NV
 * vectors of the batch, each kernel entry is broadcast once per tile and each input vector is
 * loaded once per MR channels, and every output is written once (all disk rows are summed in
 * registers). Remainders of the batch are summed in scalar code in the same order.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define VL 16
#define MR 6
#elif defined(__AVX__)
#define VL 8
#define MR 3
#else
#define VL 4
#define MR 4
#endif
#define NV 4
#ifndef PREFETCH
#define PREFETCH 2
#endif

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
#define INL static inline __attribute__((always_inline))

INL vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
INL void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* a - 0 is a for every float (also -0.0), so this folds to a broadcast; (vf){0} + a does not
 * (-0.0 + 0.0 is +0.0) and would cost an add per broadcast. */
INL vf splat(float a) { return a - (vf){0}; }

int sp_vector_width(void) { return VL; }

/* Writes a tile to an image (B, C, H, W): entry (m, b) of the tile at out[m mstep + b bstep]. */
INL void emit(vf acc[MR][NV], int mr, int nv, int b0, float *out, size_t mstep, size_t bstep) {
    for (int m = 0; m < MR; m++)
        if (m < mr)
            for (int v = 0; v < NV; v++)
                if (v < nv) {
                    float lanes[VL];
                    store(lanes, acc[m][v]);
                    float *o = out + (size_t)m * mstep + (size_t)(b0 + v * VL) * bstep;
                    for (int l = 0; l < VL; l++) o[(size_t)l * bstep] = lanes[l];
                }
}

/* The image pixel of grid position p, or -1 on the junk columns of circular padding. */
INL int64_t pixel(int64_t p, int64_t width, int64_t row_width) {
    int64_t col = p % row_width;
    return col < width ? p / row_width * width + col : -1;
}

/* ------------------------------------------------------------------------------ forward --
 * out[b, m, pixel(p)] = sum_j sum_{t < count[j] Cin} ker[(first[j] grid + p count[j]) Cin Cout + t Cout + m]
 *                                            * flat[(p + start[j]) Cin B + t B + b]
 * for p < grid, m < Cout: out is the image (B, Cout, H, W), junk positions are skipped. */

typedef struct {
    const float *ker[64]; /* per disk row: this position's kernels, advanced by Cout per t */
    const float *x[64];   /* per disk row: this position's patch, advanced by B per t */
    int len[64];          /* count[j] * Cin */
    int rows, kstep, xstep;
} rows_t;

INL void forward_tile(const rows_t *r, int mr, int nv, int b0, float *out, size_t mstep,
                      size_t bstep) {
    vf acc[MR][NV];
    for (int m = 0; m < MR; m++)
        for (int v = 0; v < NV; v++) acc[m][v] = splat(0.f);
    for (int j = 0; j < r->rows; j++) {
        const float *k = r->ker[j], *x = r->x[j] + b0;
        for (int t = 0; t < r->len[j]; t++, k += r->kstep, x += r->xstep) {
            vf xv[NV];
            for (int v = 0; v < NV; v++)
                if (v < nv) xv[v] = load(x + v * VL);
            for (int m = 0; m < MR; m++)
                if (m < mr) {
                    vf w = splat(k[m]);
                    for (int v = 0; v < NV; v++)
                        if (v < nv) acc[m][v] += w * xv[v];
                }
        }
    }
    emit(acc, mr, nv, b0, out, mstep, bstep);
}

#define FORWARD_NV(mr_)                                                                   \
    switch (nv) {                                                                         \
    case 4: forward_tile(r, mr_, 4, b0, out, mstep, bstep); break;                               \
    case 3: forward_tile(r, mr_, 3, b0, out, mstep, bstep); break;                               \
    case 2: forward_tile(r, mr_, 2, b0, out, mstep, bstep); break;                               \
    default: forward_tile(r, mr_, 1, b0, out, mstep, bstep); break;                              \
    }

static void forward_tiles(const rows_t *r, int mr, int nv, int b0, float *out, size_t mstep,
                          size_t bstep) {
    switch (mr) {
#if MR >= 6
    case 6: FORWARD_NV(6) break;
    case 5: FORWARD_NV(5) break;
#endif
#if MR >= 4
    case 4: FORWARD_NV(4) break;
#endif
    case 3: FORWARD_NV(3) break;
    case 2: FORWARD_NV(2) break;
    default: FORWARD_NV(1) break;
    }
}

/* The batch of one tile of MR channels: full NV-vector blocks, one shorter block, scalars. */
static void batch_tiles(const rows_t *r, int mr, int batch, float *out, size_t mstep,
                        size_t bstep) {
    int b0 = 0;
    for (; b0 + NV * VL <= batch; b0 += NV * VL) forward_tiles(r, mr, NV, b0, out, mstep, bstep);
    if (batch - b0 >= VL) {
        int nv = (batch - b0) / VL;
        forward_tiles(r, mr, nv, b0, out, mstep, bstep);
        b0 += nv * VL;
    }
    for (; b0 < batch; b0++)
        for (int m = 0; m < mr; m++) {
            float s = 0.f;
            for (int j = 0; j < r->rows; j++)
                for (int t = 0; t < r->len[j]; t++)
                    s += r->ker[j][(size_t)t * r->kstep + m] * r->x[j][(size_t)t * r->xstep + b0];
            out[(size_t)m * mstep + (size_t)b0 * bstep] = s;
        }
}

int sp_forward(const float *ker, const float *flat, float *out, int64_t grid, int cin, int cout,
               int batch, int rows, const int64_t *first, const int64_t *count,
               const int64_t *start, int64_t area, int64_t width, int64_t row_width,
               int threads) {
    if (rows > 64) return 1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < grid; p++) {
        const int64_t pix = pixel(p, width, row_width);
        if (pix < 0) continue;
        rows_t r;
        r.rows = rows;
        r.kstep = cout;
        r.xstep = batch;
        for (int m0 = 0; m0 < cout; m0 += MR) {
            int mr = cout - m0 < MR ? cout - m0 : MR;
            for (int j = 0; j < rows; j++) {
                r.len[j] = (int)count[j] * cin;
                r.ker[j] = ker + ((size_t)first[j] * grid + (size_t)p * count[j]) * cin * cout + m0;
                r.x[j] = flat + (size_t)(p + start[j]) * cin * batch;
            }
            batch_tiles(&r, mr, batch, out + (size_t)m0 * area + pix, area, (size_t)cout * area);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------ adjoint --
 * out[b, c, pixel(q)] = sum_j sum_{u < count[j]} [s = source[first[j] grid + q count[j] + u] >= 0]
 *                sum_{o < Cout} ker[s Cin Cout + c Cout + o] * grad[(q + start[j] + u) Cout B + o B + b]
 * for q < grid, c < Cin (out is the image (B, Cin, H, W)): the forward's transpose, reading each kernel
 * where the forward left it (source: the forward pair whose kernel acts on q's pixel). */

INL void adjoint_tile(const float *ker, const int64_t *source, const float *grad, int64_t grid,
                      int cin, int cout, int batch, int rows, const int64_t *first,
                      const int64_t *count, const int64_t *start, int64_t q, int c0, int mr,
                      int nv, int b0, float *out, size_t mstep, size_t bstep) {
    vf acc[MR][NV];
    for (int m = 0; m < MR; m++)
        for (int v = 0; v < NV; v++) acc[m][v] = splat(0.f);
    const size_t block = (size_t)cin * cout;
    for (int j = 0; j < rows; j++) {
        const int64_t *src = source + first[j] * grid + q * count[j];
        const float *g = grad + (size_t)(q + start[j]) * cout * batch + b0;
        for (int u = 0; u < count[j]; u++, g += (size_t)cout * batch) {
            if (src[u] < 0) continue;
            const float *k = ker + (size_t)src[u] * block + (size_t)c0 * cout;
            for (int o = 0; o < cout; o++) {
                vf gv[NV];
                for (int v = 0; v < NV; v++)
                    if (v < nv) gv[v] = load(g + (size_t)o * batch + v * VL);
                for (int m = 0; m < MR; m++)
                    if (m < mr) {
                        vf w = splat(k[(size_t)m * cout + o]);
                        for (int v = 0; v < NV; v++)
                            if (v < nv) acc[m][v] += w * gv[v];
                    }
            }
        }
    }
    emit(acc, mr, nv, b0, out, mstep, bstep);
}

#define ADJOINT_ARGS ker, source, grad, grid, cin, cout, batch, rows, first, count, start, q, c0
#define ADJOINT_NV(mr_)                                                                   \
    switch (nv) {                                                                         \
    case 4: adjoint_tile(ADJOINT_ARGS, mr_, 4, b0, out, mstep, bstep); break;                           \
    case 3: adjoint_tile(ADJOINT_ARGS, mr_, 3, b0, out, mstep, bstep); break;                           \
    case 2: adjoint_tile(ADJOINT_ARGS, mr_, 2, b0, out, mstep, bstep); break;                           \
    default: adjoint_tile(ADJOINT_ARGS, mr_, 1, b0, out, mstep, bstep); break;                          \
    }

static void adjoint_tiles(const float *ker, const int64_t *source, const float *grad,
                          int64_t grid, int cin, int cout, int batch, int rows,
                          const int64_t *first, const int64_t *count, const int64_t *start,
                          int64_t q, int c0, int mr, int nv, int b0, float *out,
                          size_t mstep, size_t bstep) {
    switch (mr) {
#if MR >= 6
    case 6: ADJOINT_NV(6) break;
    case 5: ADJOINT_NV(5) break;
#endif
#if MR >= 4
    case 4: ADJOINT_NV(4) break;
#endif
    case 3: ADJOINT_NV(3) break;
    case 2: ADJOINT_NV(2) break;
    default: ADJOINT_NV(1) break;
    }
}

int sp_adjoint(const float *ker, const int64_t *source, const float *grad, float *out,
               int64_t grid, int cin, int cout, int batch, int rows, const int64_t *first,
               const int64_t *count, const int64_t *start, int64_t area, int64_t width,
               int64_t row_width, int threads) {
    const size_t mstep = (size_t)area, bstep = (size_t)cin * area;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t q = 0; q < grid; q++) {
        const int64_t pix = pixel(q, width, row_width);
        if (pix < 0) continue;
#ifndef NO_PREFETCH
        /* The kernels acting on one pixel lie in as many places as the disk has offsets, too
         * many streams for the hardware prefetcher: fetch those of a later pixel now. */
        if (q + PREFETCH < grid)
            for (int j = 0; j < rows; j++) {
                const int64_t *src = source + first[j] * grid + (q + PREFETCH) * count[j];
                for (int u = 0; u < count[j]; u++)
                    if (src[u] >= 0) {
                        const char *k = (const char *)(ker + (size_t)src[u] * cin * cout);
                        for (size_t b = 0; b < (size_t)cin * cout * sizeof(float); b += 64)
                            __builtin_prefetch(k + b, 0, 3);
                    }
            }
#endif
        for (int c0 = 0; c0 < cin; c0 += MR) {
            int mr = cin - c0 < MR ? cin - c0 : MR;
            float *o = out + (size_t)c0 * area + pix;
            int b0 = 0;
            for (; b0 + NV * VL <= batch; b0 += NV * VL)
                adjoint_tiles(ADJOINT_ARGS, mr, NV, b0, o, mstep, bstep);
            if (batch - b0 >= VL) {
                int nv = (batch - b0) / VL;
                adjoint_tiles(ADJOINT_ARGS, mr, nv, b0, o, mstep, bstep);
                b0 += nv * VL;
            }
            for (; b0 < batch; b0++)
                for (int m = 0; m < mr; m++) {
                    float s = 0.f;
                    for (int j = 0; j < rows; j++) {
                        const int64_t *src = source + first[j] * grid + q * count[j];
                        for (int u = 0; u < count[j]; u++) {
                            if (src[u] < 0) continue;
                            const float *k = ker + (size_t)src[u] * cin * cout + (size_t)(c0 + m) * cout;
                            const float *g = grad + (size_t)(q + start[j] + u) * cout * batch + b0;
                            for (int oo = 0; oo < cout; oo++) s += k[oo] * g[(size_t)oo * batch];
                        }
                    }
                    o[(size_t)m * mstep + (size_t)b0 * bstep] = s;
                }
        }
    }
    return 0;
}
