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

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
#define INL static inline __attribute__((always_inline))

INL vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
INL void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* a - 0 is a for every float (also -0.0), so this folds to a broadcast; (vf){0} + a does not
 * (-0.0 + 0.0 is +0.0) and would cost an add per broadcast. */
INL vf splat(float a) { return a - (vf){0}; }

int sp_vector_width(void) { return VL; }

/* ------------------------------------------------------------------------------ forward --
 * out[p, m, b] = sum_j sum_{t < count[j] Cin} ker[(first[j] grid + p count[j]) Cin Cout + t Cout + m]
 *                                            * flat[(p + start[j]) Cin B + t B + b]
 * for p < grid, m < Cout (out is (grid, Cout, B)). */

typedef struct {
    const float *ker[64]; /* per disk row: this position's kernels, advanced by Cout per t */
    const float *x[64];   /* per disk row: this position's patch, advanced by B per t */
    int len[64];          /* count[j] * Cin */
    int rows, kstep, xstep;
} rows_t;

INL void forward_tile(const rows_t *r, int mr, int nv, int b0, float *out, int ostep) {
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
    for (int m = 0; m < MR; m++)
        if (m < mr)
            for (int v = 0; v < NV; v++)
                if (v < nv) store(out + (size_t)m * ostep + b0 + v * VL, acc[m][v]);
}

#define FORWARD_NV(mr_)                                                                   \
    switch (nv) {                                                                         \
    case 4: forward_tile(r, mr_, 4, b0, out, ostep); break;                               \
    case 3: forward_tile(r, mr_, 3, b0, out, ostep); break;                               \
    case 2: forward_tile(r, mr_, 2, b0, out, ostep); break;                               \
    default: forward_tile(r, mr_, 1, b0, out, ostep); break;                              \
    }

static void forward_tiles(const rows_t *r, int mr, int nv, int b0, float *out, int ostep) {
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
static void batch_tiles(const rows_t *r, int mr, int batch, float *out, int ostep) {
    int b0 = 0;
    for (; b0 + NV * VL <= batch; b0 += NV * VL) forward_tiles(r, mr, NV, b0, out, ostep);
    if (batch - b0 >= VL) {
        int nv = (batch - b0) / VL;
        forward_tiles(r, mr, nv, b0, out, ostep);
        b0 += nv * VL;
    }
    for (; b0 < batch; b0++)
        for (int m = 0; m < mr; m++) {
            float s = 0.f;
            for (int j = 0; j < r->rows; j++)
                for (int t = 0; t < r->len[j]; t++)
                    s += r->ker[j][(size_t)t * r->kstep + m] * r->x[j][(size_t)t * r->xstep + b0];
            out[(size_t)m * ostep + b0] = s;
        }
}

int sp_forward(const float *ker, const float *flat, float *out, int64_t grid, int cin, int cout,
               int batch, int rows, const int64_t *first, const int64_t *count,
               const int64_t *start, int threads) {
    if (rows > 64) return 1;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < grid; p++) {
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
            batch_tiles(&r, mr, batch, out + ((size_t)p * cout + m0) * batch, batch);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------ adjoint --
 * out[q, c, b] = sum_j sum_{u < count[j]} [s = source[first[j] grid + q count[j] + u] >= 0]
 *                sum_{o < Cout} ker[s Cin Cout + c Cout + o] * grad[(q + start[j] + u) Cout B + o B + b]
 * for q < grid, c < Cin (out is (grid, Cin, B)): the forward's transpose, reading each kernel
 * where the forward left it (source: the forward pair whose kernel acts on q's pixel). */

INL void adjoint_tile(const float *ker, const int64_t *source, const float *grad, int64_t grid,
                      int cin, int cout, int batch, int rows, const int64_t *first,
                      const int64_t *count, const int64_t *start, int64_t q, int c0, int mr,
                      int nv, int b0, float *out) {
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
    for (int m = 0; m < MR; m++)
        if (m < mr)
            for (int v = 0; v < NV; v++)
                if (v < nv) store(out + (size_t)m * batch + b0 + v * VL, acc[m][v]);
}

#define ADJOINT_ARGS ker, source, grad, grid, cin, cout, batch, rows, first, count, start, q, c0
#define ADJOINT_NV(mr_)                                                                   \
    switch (nv) {                                                                         \
    case 4: adjoint_tile(ADJOINT_ARGS, mr_, 4, b0, out); break;                           \
    case 3: adjoint_tile(ADJOINT_ARGS, mr_, 3, b0, out); break;                           \
    case 2: adjoint_tile(ADJOINT_ARGS, mr_, 2, b0, out); break;                           \
    default: adjoint_tile(ADJOINT_ARGS, mr_, 1, b0, out); break;                          \
    }

static void adjoint_tiles(const float *ker, const int64_t *source, const float *grad,
                          int64_t grid, int cin, int cout, int batch, int rows,
                          const int64_t *first, const int64_t *count, const int64_t *start,
                          int64_t q, int c0, int mr, int nv, int b0, float *out) {
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
               const int64_t *count, const int64_t *start, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t q = 0; q < grid; q++) {
        for (int c0 = 0; c0 < cin; c0 += MR) {
            int mr = cin - c0 < MR ? cin - c0 : MR;
            float *o = out + ((size_t)q * cin + c0) * batch;
            int b0 = 0;
            for (; b0 + NV * VL <= batch; b0 += NV * VL)
                adjoint_tiles(ADJOINT_ARGS, mr, NV, b0, o);
            if (batch - b0 >= VL) {
                int nv = (batch - b0) / VL;
                adjoint_tiles(ADJOINT_ARGS, mr, nv, b0, o);
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
                    o[(size_t)m * batch + b0] = s;
                }
        }
    }
    return 0;
}

/* -------------------------------------------------------------------- kernel gradient --
 * out[(first[j] grid + p count[j] + u) Cout Cin + o Cin + c]
 *     = sum_b xt[b length Cin + (p + start[j] + u) Cin + c] * grad[(p B + b) Cout + o]
 * for p < grid, every disk row j, u < count[j], o < Cout, c < Cin: each pair's kernel gradient,
 * transposed ((Cout, Cin) blocks), from the input stored batch first, xt (B, length, Cin), and
 * the output gradient on the grid, (grid, B, Cout). A tile holds MT output channels times NT
 * vectors of consecutive (u, c) entries, which are contiguous in xt. */

#if defined(__AVX512F__)
#define MT 6
#define NT 4
#elif defined(__AVX__)
#define MT 3
#define NT 4
#else
#define MT 4
#define NT 4
#endif

INL void kernel_grad_tile(const float *xt, size_t bstep, const float *g, int cout, int batch,
                          int cin, int mt, int nt, float *out, size_t t0) {
    vf acc[MT][NT];
    for (int m = 0; m < MT; m++)
        for (int v = 0; v < NT; v++) acc[m][v] = splat(0.f);
    for (int b = 0; b < batch; b++, xt += bstep, g += cout) {
        vf xv[NT];
        for (int v = 0; v < NT; v++)
            if (v < nt) xv[v] = load(xt + v * VL);
        for (int m = 0; m < MT; m++)
            if (m < mt) {
                vf w = splat(g[m]);
                for (int v = 0; v < NT; v++)
                    if (v < nt) acc[m][v] += w * xv[v];
            }
    }
    if (cin % VL == 0) { /* every vector lies within one pair: (Cout, Cin) rows */
        for (int v = 0; v < NT; v++)
            if (v < nt) {
                size_t t = t0 + (size_t)v * VL, u = t / cin, c = t % cin;
                for (int m = 0; m < MT; m++)
                    if (m < mt) store(out + (u * cout + m) * cin + c, acc[m][v]);
            }
        return;
    }
    for (int v = 0; v < NT; v++)
        if (v < nt)
            for (int m = 0; m < MT; m++)
                if (m < mt) {
                    float lanes[VL];
                    store(lanes, acc[m][v]);
                    for (int l = 0; l < VL; l++) {
                        size_t t = t0 + (size_t)v * VL + l, u = t / cin, c = t % cin;
                        out[(u * cout + m) * cin + c] = lanes[l];
                    }
                }
}

#define KGRAD_NT(mt_)                                                                     \
    switch (nt) {                                                                         \
    case 4: kernel_grad_tile(x, bstep, g, cout, batch, cin, mt_, 4, o, t0); break;        \
    case 3: kernel_grad_tile(x, bstep, g, cout, batch, cin, mt_, 3, o, t0); break;        \
    case 2: kernel_grad_tile(x, bstep, g, cout, batch, cin, mt_, 2, o, t0); break;        \
    default: kernel_grad_tile(x, bstep, g, cout, batch, cin, mt_, 1, o, t0); break;       \
    }

static void kernel_grad_tiles(const float *x, size_t bstep, const float *g, int cout, int batch,
                              int cin, int mt, int nt, float *o, size_t t0) {
    switch (mt) {
#if MT >= 6
    case 6: KGRAD_NT(6) break;
    case 5: KGRAD_NT(5) break;
#endif
#if MT >= 4
    case 4: KGRAD_NT(4) break;
#endif
    case 3: KGRAD_NT(3) break;
    case 2: KGRAD_NT(2) break;
    default: KGRAD_NT(1) break;
    }
}

int sp_kernel_grad(const float *xt, const float *grad, float *out, int64_t grid, int cin,
                   int cout, int batch, int64_t length, int rows, const int64_t *first,
                   const int64_t *count, const int64_t *start, int threads) {
    const size_t bstep = (size_t)length * cin;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t p = 0; p < grid; p++) {
        for (int j = 0; j < rows; j++) {
            const size_t len = (size_t)count[j] * cin;
            const float *xrow = xt + (size_t)(p + start[j]) * cin;
            float *pairs = out + ((size_t)first[j] * grid + (size_t)p * count[j]) * cout * cin;
            for (int o0 = 0; o0 < cout; o0 += MT) {
                int mt = cout - o0 < MT ? cout - o0 : MT;
                const float *g = grad + (size_t)p * batch * cout + o0;
                float *o = pairs + (size_t)o0 * cin;
                size_t t0 = 0;
                while (t0 + VL <= len) {
                    int nt = (int)((len - t0) / VL);
                    if (nt > NT) nt = NT;
                    kernel_grad_tiles(xrow + t0, bstep, g, cout, batch, cin, mt, nt, o, t0);
                    t0 += (size_t)nt * VL;
                }
                for (size_t t = t0; t < len; t++) { /* scalar remainder */
                    size_t u = t / cin, c = t % cin;
                    for (int m = 0; m < mt; m++) {
                        float s = 0.f;
                        for (int b = 0; b < batch; b++)
                            s += xrow[b * bstep + t] * g[(size_t)b * cout + m];
                        o[(u * cout + m) * cin + c] = s;
                    }
                }
            }
        }
    }
    return 0;
}
