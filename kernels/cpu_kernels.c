/* pbmlx's fused CPU kernels (see kernels/cpu.py for how they are built, bound and checked). */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* 8 float lanes: the compiler maps them to the widest vector unit it has (AVX2, NEON, SSE). */
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
#define W 8

static inline vf ld(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float a) { return (vf){0} + a; }
static inline vf ld_part(const float *p, int64_t n, float fill) {
  float b[W];
  for (int i = 0; i < W; i++) b[i] = i < n ? p[i] : fill;
  return ld(b);
}
static inline void st_part(float *p, vf v, int64_t n) {
  float b[W];
  st(b, v);
  memcpy(p, b, (size_t)n * sizeof(float));
}
static inline vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }
static inline vf vmax(vf a, vf b) { return sel(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return sel(a < b, a, b); }
static inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; i++) m = v[i] > m ? v[i] : m;
  return m;
}
static inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < W; i++) s += v[i];
  return s;
}

/* exp(x) = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split
   into a part exact in float and a correction); e^r by its Taylor polynomial of degree 7
   (truncation < 6e-9 relative); 2^n written into the exponent bits. Below EXP_LO the result
   is 0 and above EXP_HI +inf, so that 2^n stays a normal float; NaN stays NaN. */
#define EXP_LO -87.3f
#define EXP_HI 88.3f
static inline vf vexp(vf x) {
  const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  vf c = vmin(vmax(x, splat(EXP_LO)), splat(EXP_HI));
  vf t = c * 1.44269504088896341f + shifter;
  vf n = t - shifter;
  vf r = c - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  vf p = r * (1.0f / 5040) + (1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  vi e = ((vi)t - (vi)splat(shifter) + 127) << 23;
  vf y = p * (vf)e;
  y = sel(x < EXP_LO, splat(0.0f), y);
  y = sel(x > EXP_HI, splat(__builtin_inff()), y);
  return sel(x != x, x, y);
}

static inline vf vsilu(vf x) { return x / (1.0f + vexp(-x)); }

/* gelu(x) = x Phi(x). The normal tail Phi(-|x|) = erfc(z) / 2, z = |x| / sqrt(2), is computed
   as 0.5 t P(t) exp(-z^2) with t = 1 / (1 + z / 2) and P of degree 10, fitted by weighted least
   squares on t in [0, 1] to erfcx(z) / t (relative error 1.2e-8 in float64); Phi(x) is that
   tail for x < 0 and 1 minus it otherwise. */
static inline vf vgelu(vf x) {
  vf ax = sel(x < 0, -x, x);
  vf z = ax * 0.70710678118654752f;
  vf t = 1.0f / (1.0f + 0.5f * z);
  vf p = t * 4.319652280e-02f - 2.347392164e-01f;
  p = p * t + 4.937073267e-01f;
  p = p * t - 4.549892151e-01f;
  p = p * t + 1.321884582e-01f;
  p = p * t - 5.921672976e-02f;
  p = p * t + 9.346400864e-02f;
  p = p * t + 1.753157007e-01f;
  p = p * t + 2.468846009e-01f;
  p = p * t + 2.820937527e-01f;
  p = p * t + 2.820947952e-01f;
  vf q = 0.5f * t * p * vexp(-z * z);
  return x * sel(x < 0, q, 1.0f - q);
}

/* ------------------------------------------------------------------ elementwise */

#define UNARY(name, f)                                                 \
  void name(const float *x, float *y, int64_t n) {                     \
    int64_t i;                                                         \
    for (i = 0; i + W <= n; i += W) st(y + i, f(ld(x + i)));           \
    if (i < n) st_part(y + i, f(ld_part(x + i, n - i, 0.0f)), n - i);  \
  }
UNARY(pb_exp, vexp)
UNARY(pb_silu, vsilu)
UNARY(pb_gelu, vgelu)

/* y[r, i] = h[r, i] * gelu(h[r, inner + i]) for the rows r of h (rows x 2 inner). */
void pb_geglu(const float *h, float *y, int64_t rows, int64_t inner) {
  for (int64_t r = 0; r < rows; r++) {
    const float *a = h + r * 2 * inner, *g = a + inner;
    float *out = y + r * inner;
    int64_t i;
    for (i = 0; i + W <= inner; i += W) st(out + i, ld(a + i) * vgelu(ld(g + i)));
    if (i < inner)
      st_part(out + i, ld_part(a + i, inner - i, 0.0f) * vgelu(ld_part(g + i, inner - i, 0.0f)),
              inner - i);
  }
}

/* ------------------------------------------------------------------ convolution helpers */

/* Rows [r0, r1) of the im2col matrix of x (B, H, Wd, C; channels last) for a kh x kw kernel
   with the given stride and zero padding: row r = (b Ho + oy) Wo + ox holds the kh kw C
   inputs under output pixel (oy, ox) in (ky, kx, c) order, the order of an MLX conv weight
   (O, kh, kw, C) read as (O, kh kw C). cols: (r1 - r0) x kh kw C. */
void pb_im2col(const float *x, int64_t H, int64_t Wd, int64_t C, int64_t kh, int64_t kw,
               int64_t stride, int64_t pad, int64_t Ho, int64_t Wo, int64_t r0, int64_t r1,
               float *cols) {
  const int64_t K = kh * kw * C;
  for (int64_t r = r0; r < r1; r++) {
    const int64_t ox = r % Wo, oy = (r / Wo) % Ho, b = r / (Wo * Ho);
    float *row = cols + (r - r0) * K;
    for (int64_t ky = 0; ky < kh; ky++) {
      const int64_t iy = oy * stride - pad + ky;
      for (int64_t kx = 0; kx < kw; kx++) {
        const int64_t ix = ox * stride - pad + kx;
        float *dst = row + (ky * kw + kx) * C;
        if (iy < 0 || iy >= H || ix < 0 || ix >= Wd)
          memset(dst, 0, (size_t)C * sizeof(float));
        else
          memcpy(dst, x + ((b * H + iy) * Wd + ix) * C, (size_t)C * sizeof(float));
      }
    }
  }
}

/* y[r, :n] = b for rows r < rows of y (row stride ldy): the bias a GEMM with beta = 1 adds
   to. */
void pb_fill_rows(float *y, int64_t ldy, const float *b, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++) memcpy(y + r * ldy, b, (size_t)n * sizeof(float));
}

/* ------------------------------------------------------------------ Winograd 3 x 3 convolution */

/* F(m x m, 3 x 3), m = 2 or 4 (alpha = m + 2): a stride-1, padding-1 convolution of x (B, H, Wd,
   C; channels last) is computed per m x m output tile from the alpha x alpha input tile d above
   it as Y = A^T [ (G g G^T) . (B^T d B) ] A, the product "." elementwise per position and summed
   over input channels, so each of the alpha^2 positions is one GEMM
   M_p (T x O) = V_p (T x C) . U_p^T (U_p: O x C), T = B ceil(H/m) ceil(Wd/m) tiles.
   Multiplies per output: 9 C direct, (alpha/m)^2 C here (4 C at m = 2, 2.25 C at m = 4).
   Interpolation points 0, -1, 1 (m = 2) and 0, 1, -1, 2, -2 (m = 4), plus infinity.
   Vectorised over 8 channels; C and O must be multiples of 8 (the dispatcher checks). */

static const float WG_BT2[4 * 4] = {1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1};
static const float WG_G2[4 * 3] = {1, 0, 0, .5f, .5f, .5f, .5f, -.5f, .5f, 0, 0, 1};
static const float WG_AT2[2 * 4] = {1, 1, 1, 0, 0, 1, -1, -1};
static const float WG_BT4[6 * 6] = {4, 0, -5, 0,  1, 0, 0, -4, -4, 1, 1, 0, 0, 4, -4, -1, 1, 0,
                                    0, -2, -1, 2, 1, 0, 0, 2, -1, -2, 1, 0, 0, 4, 0,  -5, 0, 1};
static const float WG_G4[6 * 3] = {1.f / 4,  0,        0,       -1.f / 6, -1.f / 6, -1.f / 6,
                                   -1.f / 6, 1.f / 6,  -1.f / 6, 1.f / 24, 1.f / 12, 1.f / 6,
                                   1.f / 24, -1.f / 12, 1.f / 6, 0,        0,        1};
static const float WG_AT4[4 * 6] = {1, 1, 1, 1, 1, 0, 0, 1, -1, 2, -2, 0,
                                    0, 1, 1, 4, 4, 0, 0, 1, -1, 8, -8, 1};

/* out (r x c) = L (r x k) . in (k x c), vectors; L a constant matrix (zeros skipped). */
static inline void wg_left(const float *L, int r, int k, int c, const vf *in, vf *out) {
  for (int i = 0; i < r; i++)
    for (int j = 0; j < c; j++) {
      vf s = (vf){0};
      for (int t = 0; t < k; t++)
        if (L[i * k + t] != 0.0f) s += L[i * k + t] * in[t * c + j];
      out[i * c + j] = s;
    }
}

/* out (r x c) = in (r x k) . R^T (R: c x k), vectors. */
static inline void wg_right(const float *R, int r, int k, int c, const vf *in, vf *out) {
  for (int i = 0; i < r; i++)
    for (int j = 0; j < c; j++) {
      vf s = (vf){0};
      for (int t = 0; t < k; t++)
        if (R[j * k + t] != 0.0f) s += in[i * k + t] * R[j * k + t];
      out[i * c + j] = s;
    }
}

/* U[p, o - o0, c] = (G g_oc G^T)[p] for output channels [o0, o1); w (O, 3, 3, C); U holds
   ldu rows (output channels) per position. */
static inline void wg_weight(const float *w, int64_t C, int m, int64_t o0, int64_t o1, float *U,
                             int64_t ldu) {
  const int a = m + 2;
  const float *G = m == 2 ? WG_G2 : WG_G4;
  vf g[9], t[6 * 3], u[36];
  for (int64_t o = o0; o < o1; o++)
    for (int64_t c = 0; c < C; c += W) {
      for (int i = 0; i < 9; i++) g[i] = ld(w + (o * 9 + i) * C + c);
      wg_left(G, a, 3, 3, g, t);  /* G g: a x 3 */
      wg_right(G, a, 3, a, t, u); /* (G g) G^T: a x a */
      for (int p = 0; p < a * a; p++) st(U + (p * ldu + o - o0) * C + c, u[p]);
    }
}
void pb_wino_weight(const float *w, int64_t C, int m, int64_t o0, int64_t o1, float *U,
                    int64_t ldu) {
  if (m == 2) wg_weight(w, C, 2, o0, o1, U, ldu);
  else wg_weight(w, C, 4, o0, o1, U, ldu);
}

/* V[p, t - t0, c] = (B^T d_t B)[p] for tiles [t0, t1) (t = (b th + ty) tw + tx; zero padding
   of 1); V holds ldv rows (tiles) per position. */
static inline void wg_input(const float *x, int64_t H, int64_t Wd, int64_t C, int m, int64_t th,
                            int64_t tw, int64_t t0, int64_t t1, float *V, int64_t ldv) {
  const int a = m + 2;
  const float *BT = m == 2 ? WG_BT2 : WG_BT4;
  vf d[36], t[36], v[36];
  for (int64_t tile = t0; tile < t1; tile++) {
    const int64_t tx = tile % tw, ty = (tile / tw) % th, b = tile / (tw * th);
    const int64_t y0 = ty * m - 1, x0 = tx * m - 1;
    float *row = V + (tile - t0) * C;
    for (int64_t c = 0; c < C; c += W) {
      for (int i = 0; i < a; i++)
        for (int j = 0; j < a; j++) {
          const int64_t iy = y0 + i, ix = x0 + j;
          d[i * a + j] = (iy < 0 || iy >= H || ix < 0 || ix >= Wd)
                             ? (vf){0}
                             : ld(x + ((b * H + iy) * Wd + ix) * C + c);
        }
      wg_left(BT, a, a, a, d, t);  /* B^T d */
      wg_right(BT, a, a, a, t, v); /* (B^T d) B */
      for (int p = 0; p < a * a; p++) st(row + p * ldv * C + c, v[p]);
    }
  }
}
void pb_wino_input(const float *x, int64_t H, int64_t Wd, int64_t C, int m, int64_t th,
                   int64_t tw, int64_t t0, int64_t t1, float *V, int64_t ldv) {
  if (m == 2) wg_input(x, H, Wd, C, 2, th, tw, t0, t1, V, ldv);
  else wg_input(x, H, Wd, C, 4, th, tw, t0, t1, V, ldv);
}

/* y[b, ty m + i, tx m + j, o] = (A^T M_t A)[i, j] + bias[o] for tiles [t0, t1) and output
   channels [o0, o1), clipped to the H x Wd output (O channels per pixel); M[p, t - t0, o - o0]
   with ldm rows (tiles) per position and ldc floats per row; bias may be NULL. */
static inline void wg_output(const float *M, int64_t ldm, int64_t ldc, int m, int64_t H,
                             int64_t Wd, int64_t th, int64_t tw, int64_t t0, int64_t t1,
                             int64_t o0, int64_t o1, int64_t O, const float *bias, float *y) {
  const int a = m + 2;
  const float *AT = m == 2 ? WG_AT2 : WG_AT4;
  vf mm[36], t[4 * 6], r[16];
  for (int64_t tile = t0; tile < t1; tile++) {
    const int64_t tx = tile % tw, ty = (tile / tw) % th, b = tile / (tw * th);
    const float *row = M + (tile - t0) * ldc;
    for (int64_t o = o0; o < o1; o += W) {
      for (int p = 0; p < a * a; p++) mm[p] = ld(row + p * ldm * ldc + o - o0);
      wg_left(AT, m, a, a, mm, t); /* A^T M: m x a */
      wg_right(AT, m, a, m, t, r); /* (A^T M) A: m x m */
      const vf bv = bias ? ld(bias + o) : (vf){0};
      for (int i = 0; i < m; i++) {
        const int64_t oy = ty * m + i;
        if (oy >= H) break;
        for (int j = 0; j < m; j++) {
          const int64_t ox = tx * m + j;
          if (ox >= Wd) break;
          st(y + ((b * H + oy) * Wd + ox) * O + o, r[i * m + j] + bv);
        }
      }
    }
  }
}
void pb_wino_output(const float *M, int64_t ldm, int64_t ldc, int m, int64_t H, int64_t Wd,
                    int64_t th, int64_t tw, int64_t t0, int64_t t1, int64_t o0, int64_t o1,
                    int64_t O, const float *bias, float *y) {
  if (m == 2) wg_output(M, ldm, ldc, 2, H, Wd, th, tw, t0, t1, o0, o1, O, bias, y);
  else wg_output(M, ldm, ldc, 4, H, Wd, th, tw, t0, t1, o0, o1, O, bias, y);
}

/* ------------------------------------------------------------------ group norm */

/* GroupNorm of one sample x (HW x C, channels last) over its groups [g0, g1) (C / G channels
   each), optionally followed by SiLU (act = 1):
   y = act((x - mean_g) / sqrt(var_g + eps) * w + b), biased variance, sums in double.
   work: 2 (g1 - g0) C / G doubles. */
void pb_group_norm(const float *x, const float *w, const float *b, float *y, int64_t HW,
                   int64_t C, int64_t G, float eps, int act, int64_t g0, int64_t g1,
                   double *work) {
  const int64_t cg = C / G, c0 = g0 * cg, nc = (g1 - g0) * cg;
  double *s = work, *s2 = work + nc;
  float a[nc + W], bb[nc + W];
  for (int64_t c = 0; c < nc; c++) s[c] = s2[c] = 0.0;
  for (int64_t p = 0; p < HW; p++) {
    const float *row = x + p * C + c0;
    for (int64_t c = 0; c < nc; c++) s[c] += row[c];
  }
  for (int64_t g = 0; g < g1 - g0; g++) {
    double m = 0.0;
    for (int64_t c = g * cg; c < (g + 1) * cg; c++) m += s[c];
    m /= (double)(HW * cg);
    for (int64_t c = g * cg; c < (g + 1) * cg; c++) s[c] = m; /* s holds the mean from here */
  }
  for (int64_t p = 0; p < HW; p++) {
    const float *row = x + p * C + c0;
    for (int64_t c = 0; c < nc; c++) {
      double dev = row[c] - s[c];
      s2[c] += dev * dev;
    }
  }
  for (int64_t g = 0; g < g1 - g0; g++) {
    double v = 0.0;
    for (int64_t c = g * cg; c < (g + 1) * cg; c++) v += s2[c];
    float rstd = (float)(1.0 / sqrt(v / (double)(HW * cg) + (double)eps));
    for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
      a[c] = rstd * w[c0 + c];
      bb[c] = b[c0 + c] - (float)s[c] * a[c];
    }
  }
  for (int64_t p = 0; p < HW; p++) {
    const float *row = x + p * C + c0;
    float *out = y + p * C + c0;
    int64_t c;
    for (c = 0; c + W <= nc; c += W) {
      vf v = ld(row + c) * ld(a + c) + ld(bb + c);
      st(out + c, act ? vsilu(v) : v);
    }
    if (c < nc) {
      vf v = ld_part(row + c, nc - c, 0.0f) * ld(a + c) + ld(bb + c);
      st_part(out + c, act ? vsilu(v) : v, nc - c);
    }
  }
}

/* ------------------------------------------------------------------ attention */

#define QR 24 /* query rows per block (a multiple of TR): their QR x S scores stay in cache */

/* The two products are computed in tiles of TR rows x 16 (or 8) columns held in 2 TR vector
   registers: 12 accumulators hide the multiply-add latency on 16-register x86 and ARM cores. */
#define TR 6

/* s(TR x 16) = q (TR rows of d, row stride d) . kp (a d x 16 panel, row-major) */
static inline void qk_tile(const float *q, int64_t d, const float *kp, float *s, int64_t lds) {
  vf acc[TR][2];
#pragma GCC unroll 8
  for (int r = 0; r < TR; r++) acc[r][0] = acc[r][1] = (vf){0};
  for (int64_t c = 0; c < d; c++) {
    vf k0 = ld(kp + c * 2 * W), k1 = ld(kp + c * 2 * W + W);
#pragma GCC unroll 8
    for (int r = 0; r < TR; r++) {
      float x = q[r * d + c];
      acc[r][0] += x * k0;
      acc[r][1] += x * k1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < TR; r++) {
    st(s + r * lds, acc[r][0]);
    st(s + r * lds + W, acc[r][1]);
  }
}

/* o(TR x 16) = p (TR rows of n, row stride ldp) . vp (an n x 16 panel, row-major) */
static inline void pv_tile16(const float *p, int64_t ldp, const float *vp, int64_t n, float *o,
                             int64_t ldo) {
  vf acc[TR][2];
#pragma GCC unroll 8
  for (int r = 0; r < TR; r++) acc[r][0] = acc[r][1] = (vf){0};
  for (int64_t j = 0; j < n; j++) {
    vf v0 = ld(vp + j * 2 * W), v1 = ld(vp + j * 2 * W + W);
#pragma GCC unroll 8
    for (int r = 0; r < TR; r++) {
      float x = p[r * ldp + j];
      acc[r][0] += x * v0;
      acc[r][1] += x * v1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < TR; r++) {
    st(o + r * ldo, acc[r][0]);
    st(o + r * ldo + W, acc[r][1]);
  }
}

/* o(TR x 8): as pv_tile16 with an n x 8 panel */
static inline void pv_tile8(const float *p, int64_t ldp, const float *vp, int64_t n, float *o,
                            int64_t ldo) {
  vf acc[TR];
#pragma GCC unroll 8
  for (int r = 0; r < TR; r++) acc[r] = (vf){0};
  for (int64_t j = 0; j < n; j++) {
    vf v0 = ld(vp + j * W);
#pragma GCC unroll 8
    for (int r = 0; r < TR; r++) acc[r] += p[r * ldp + j] * v0;
  }
#pragma GCC unroll 8
  for (int r = 0; r < TR; r++) st(o + r * ldo, acc[r]);
}

/* Floats of work space one pb_attention call needs. */
int64_t pb_attention_work(int64_t S, int64_t d) {
  const int64_t Sp = (S + 2 * W - 1) / (2 * W) * (2 * W), dp = (d + W - 1) / W * W;
  return d * Sp + S * dp + QR * d + QR * Sp + QR * dp;
}

/* softmax(q k^T scale) v for the work units u in [u0, u1): unit u is (batch, head) pair
   bh = u / chunks (bh = b H + h) and its query rows [c rows, (c + 1) rows), c = u % chunks,
   rows = ceil(L / chunks) rounded up to QR. q and o are (B, L, H d), k and v (B, S, H d),
   contiguous; head h is columns [h d, (h + 1) d). For each pair, k^T is packed in d x 16
   panels (one per 16 keys, zero past S) and v in S x 16 panels (one per 16 columns, the last
   8 wide when dp = d rounded up to 8 is not a multiple of 16; zero past d), so the tiles read
   memory in order; then per block of QR query rows: scores s (QR x Sp), row maxima m,
   e = exp((s - m) scale) in place, o = (e v) / sum(e). */
void pb_attention(const float *q, const float *k, const float *v, float *o, int64_t L,
                  int64_t S, int64_t H, int64_t d, float scale, int64_t chunks, int64_t u0,
                  int64_t u1, float *work) {
  const int64_t Sp = (S + 2 * W - 1) / (2 * W) * (2 * W), dp = (d + W - 1) / W * W;
  const int64_t D = H * d, rows = ((L + chunks - 1) / chunks + QR - 1) / QR * QR;
  float *kp = work, *vp = kp + d * Sp, *qb = vp + S * dp, *sb = qb + QR * d, *ob = sb + QR * Sp;
  const vf lane = {0, 1, 2, 3, 4, 5, 6, 7};
  int64_t packed = -1;
  for (int64_t u = u0; u < u1; u++) {
    const int64_t bh = u / chunks, b = bh / H, h = bh % H;
    const int64_t start = (u % chunks) * rows, end = start + rows < L ? start + rows : L;
    const float *qh = q + b * L * D + h * d, *kh = k + b * S * D + h * d,
                *vh = v + b * S * D + h * d;
    float *oh = o + b * L * D + h * d;
    if (bh != packed) {
      for (int64_t j = 0; j < Sp; j++) {
        float *panel = kp + (j / (2 * W)) * d * 2 * W + j % (2 * W);
        for (int64_t c = 0; c < d; c++) panel[c * 2 * W] = j < S ? kh[j * D + c] : 0.0f;
      }
      for (int64_t c0 = 0; c0 < dp; c0 += 2 * W) {
        const int64_t wd = dp - c0 >= 2 * W ? 2 * W : W;
        float *panel = vp + c0 * S;
        for (int64_t j = 0; j < S; j++)
          for (int64_t c = 0; c < wd; c++)
            panel[j * wd + c] = c0 + c < d ? vh[j * D + c0 + c] : 0.0f;
      }
      packed = bh;
    }
    for (int64_t i0 = start; i0 < end; i0 += QR) {
      const int64_t nr = end - i0 < QR ? end - i0 : QR;
      for (int64_t r = 0; r < QR; r++) {
        if (r < nr) memcpy(qb + r * d, qh + (i0 + r) * D, (size_t)d * sizeof(float));
        else memset(qb + r * d, 0, (size_t)d * sizeof(float));
      }
      for (int64_t j = 0; j < Sp; j += 2 * W)
        for (int64_t r = 0; r < QR; r += TR) qk_tile(qb + r * d, d, kp + j * d, sb + r * Sp + j, Sp);
      float inv[QR];
      for (int64_t r = 0; r < QR; r++) {
        float *row = sb + r * Sp;
        int64_t j;
        vf m = splat(-__builtin_inff());
        for (j = 0; j + W <= S; j += W) m = vmax(m, ld(row + j));
        if (j < S) m = vmax(m, ld_part(row + j, S - j, -__builtin_inff()));
        const float mx = hmax(m);
        vf sum = {0};
        for (j = 0; j + W <= S; j += W) {
          vf e = vexp((ld(row + j) - mx) * scale);
          st(row + j, e);
          sum += e;
        }
        if (j < S) { /* the last partial vector; columns past S get 0 (never read) */
          vf e = vexp((ld(row + j) - mx) * scale);
          e = sel(lane < (float)(S - j), e, splat(0.0f));
          st(row + j, e);
          sum += e;
        }
        inv[r] = 1.0f / hsum(sum);
      }
      for (int64_t c0 = 0; c0 < dp; c0 += 2 * W) /* each v panel read from cache QR / TR times */
        for (int64_t r = 0; r < QR; r += TR) {
          if (dp - c0 >= 2 * W) pv_tile16(sb + r * Sp, Sp, vp + c0 * S, S, ob + r * dp + c0, dp);
          else pv_tile8(sb + r * Sp, Sp, vp + c0 * S, S, ob + r * dp + c0, dp);
        }
      for (int64_t r = 0; r < nr; r++)
        for (int64_t c = 0; c < d; c++) oh[(i0 + r) * D + c] = ob[r * dp + c] * inv[r];
    }
  }
}

/* ------------------------------------------------------------------ adjust chain */

/* The adjust engine's per-pixel ops (pbmlx/adjust/ops.py gives each formula; this is the same
   arithmetic in float32) fused into one pass: 8 pixels at a time are read (8-bit codes / 255,
   or float32), every step of the program is applied in registers, and the result is written
   as float32, as 8-bit codes round(clip(x) * 255) (round half to even, as np.rint), or, for the
   statistics pass that contrast needs, as the sum of each row's BT.601 luma (in double).
   Program: nsteps rows of AJ_ROW floats, [opcode, p0, p1, ...] (kernels/adjust.py writes it). */
#define AJ_ROW 16
enum {
  AJ_GAINS, AJ_BRIGHTNESS, AJ_CONTRAST, AJ_GAMMA, AJ_HIGHLIGHTS, AJ_SHADOWS, AJ_FADE,
  AJ_MATRIX, AJ_SEPIA, AJ_VIBRANCE, AJ_INVERT, AJ_VIGNETTE, AJ_GRAIN
};
enum { AJ_OUT_F32, AJ_OUT_U8, AJ_OUT_LUMA };

static inline vf vclip01(vf x) { return vmin(vmax(x, splat(0.0f)), splat(1.0f)); }

/* log(x) for normal x > 0: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
   s = (m - 1) / (m + 1), |s| <= 0.1716, by its odd series to s^11 (truncation < 1e-10). */
static inline vf vlog(vf x) {
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xff) - 127;
  vf m = (vf)((bits & 0x007fffff) | 0x3f800000); /* [1, 2) */
  vi big = m > 1.41421356f;
  m = sel(big, m * 0.5f, m);
  e = e + (big & 1);
  vf s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  vf p = s2 * (1.0f / 11) + (1.0f / 9);
  p = p * s2 + (1.0f / 7);
  p = p * s2 + (1.0f / 5);
  p = p * s2 + (1.0f / 3);
  p = p * s2 + 1.0f;
  vf ef = __builtin_convertvector(e, vf);
  return ef * 0.693145751953125f + (ef * 1.428606765330187e-06f + 2.0f * s * p);
}

/* x ** p for x >= 0 and p > 0 (0 ** p = 0): exp(p log x); x below FLT_MIN counts as 0. */
static inline vf vpow(vf x, float p) {
  vf y = vexp(p * vlog(vmax(x, splat(1.17549435e-38f))));
  return sel(x < 1.17549435e-38f, splat(0.0f), y);
}

static inline vf srgb_decode8(vf x) {
  vf hi = vpow((x + 0.055f) / 1.055f, 2.4f);
  return sel(x <= 0.04045f, x / 12.92f, hi);
}

static inline vf srgb_encode8(vf y) {
  y = vmax(y, splat(0.0f));
  vf hi = 1.055f * vpow(y, 1.0f / 2.4f) - 0.055f;
  return sel(y <= 0.0031308f, y * 12.92f, hi);
}

static inline vf vsqrt(vf x) {
  for (int i = 0; i < W; i++) x[i] = sqrtf(x[i]);
  return x;
}

static inline vf luma8(vf r, vf g, vf b) { return r * 0.299f + g * 0.587f + b * 0.114f; }

/* Applies the program to 8 pixels of row `row`, columns col .. col + 7. */
static inline void aj_apply(vf *R, vf *G, vf *B, const float *prog, int64_t nsteps,
                            const float *noise, int64_t row, int64_t col, int64_t width) {
  vf r = *R, g = *G, b = *B;
  for (int64_t s = 0; s < nsteps; s++) {
    const float *q = prog + s * AJ_ROW;
    const float *p = q + 1;
    switch ((int)q[0]) {
      case AJ_GAINS:
        r = vclip01(srgb_encode8(srgb_decode8(r) * p[0]));
        g = vclip01(srgb_encode8(srgb_decode8(g) * p[1]));
        b = vclip01(srgb_encode8(srgb_decode8(b) * p[2]));
        break;
      case AJ_BRIGHTNESS:
        r = vclip01(r + p[0] * r * (1.0f - r));
        g = vclip01(g + p[0] * g * (1.0f - g));
        b = vclip01(b + p[0] * b * (1.0f - b));
        break;
      case AJ_CONTRAST: /* p0 = 1 + a, p1 = the mean luma m */
        r = vclip01(p[1] + p[0] * (r - p[1]));
        g = vclip01(p[1] + p[0] * (g - p[1]));
        b = vclip01(p[1] + p[0] * (b - p[1]));
        break;
      case AJ_GAMMA:
        r = vclip01(vpow(r, p[0]));
        g = vclip01(vpow(g, p[0]));
        b = vclip01(vpow(b, p[0]));
        break;
      case AJ_HIGHLIGHTS: {
        vf l = luma8(r, g, b), d = p[0] * l * l * (1.0f - l);
        r = vclip01(r + d), g = vclip01(g + d), b = vclip01(b + d);
        break;
      }
      case AJ_SHADOWS: {
        vf l = luma8(r, g, b), d = p[0] * l * (1.0f - l) * (1.0f - l);
        r = vclip01(r + d), g = vclip01(g + d), b = vclip01(b + d);
        break;
      }
      case AJ_FADE: /* p0 = lo, p1 = hi - lo */
        r = vclip01(p[0] + r * p[1]);
        g = vclip01(p[0] + g * p[1]);
        b = vclip01(p[0] + b * p[1]);
        break;
      case AJ_MATRIX: { /* p0..p8: the matrix's columns */
        vf nr = r * p[0] + g * p[3] + b * p[6];
        vf ng = r * p[1] + g * p[4] + b * p[7];
        vf nb = r * p[2] + g * p[5] + b * p[8];
        r = vclip01(nr), g = vclip01(ng), b = vclip01(nb);
        break;
      }
      case AJ_SEPIA: { /* p0..p8: the sepia matrix's columns, p9 = a */
        vf tr = vclip01(r * p[0] + g * p[3] + b * p[6]);
        vf tg = vclip01(r * p[1] + g * p[4] + b * p[7]);
        vf tb = vclip01(r * p[2] + g * p[5] + b * p[8]);
        r = vclip01(r + p[9] * (tr - r));
        g = vclip01(g + p[9] * (tg - g));
        b = vclip01(b + p[9] * (tb - b));
        break;
      }
      case AJ_VIBRANCE: {
        vf l = luma8(r, g, b);
        vf c = vmax(vmax(r, g), b) - vmin(vmin(r, g), b);
        vf f = 1.0f + p[0] * (1.0f - c);
        r = vclip01(l + f * (r - l)), g = vclip01(l + f * (g - l)), b = vclip01(l + f * (b - l));
        break;
      }
      case AJ_INVERT:
        r = vclip01(r + p[0] * (1.0f - 2.0f * r));
        g = vclip01(g + p[0] * (1.0f - 2.0f * g));
        b = vclip01(b + p[0] * (1.0f - 2.0f * b));
        break;
      case AJ_VIGNETTE: { /* p0 = |a|, p1 = target, p2 = 0.5 - H/2, p3 = 0.5 - W/2, p4 = half diag */
        const vf lane = {0, 1, 2, 3, 4, 5, 6, 7};
        float dy = ((float)row + p[2]) / p[4];
        vf dx = (lane + (float)col + p[3]) / p[4];
        vf d = vsqrt(dy * dy + dx * dx);
        vf t = vclip01((d - 0.35f) / 0.65f);
        vf k = p[0] * (t * t * (3.0f - 2.0f * t));
        r = vclip01(r + k * (p[1] - r));
        g = vclip01(g + k * (p[1] - g));
        b = vclip01(b + k * (p[1] - b));
        break;
      }
      case AJ_GRAIN: { /* p0 = a * GRAIN_SIGMA * 4; noise: one value per pixel */
        vf n = ld_part(noise + row * width + col, width - col < W ? width - col : W, 0.0f);
        vf l = luma8(r, g, b), d = p[0] * l * (1.0f - l) * n;
        r = vclip01(r + d), g = vclip01(g + d), b = vclip01(b + d);
        break;
      }
      default:
        break;
    }
  }
  *R = r, *G = g, *B = b;
}

/* Ops that map each channel on its own (x_c -> f_c(x_c)): on 8-bit input a run of them at the
   start of the program is a 256-entry table per channel, computed once per call with the same
   arithmetic (so the result is the same as applying them per pixel). */
static inline int aj_separable(int op) {
  return op == AJ_GAINS || op == AJ_BRIGHTNESS || op == AJ_CONTRAST || op == AJ_GAMMA ||
         op == AJ_FADE || op == AJ_INVERT || op < 0;
}

#define AJ_BLOCK 64 /* pixels per block: planar float copies of a block stay in L1 */

/* Rows [r0, r1) of an (H, width, 3) image: src is uint8 codes (src_u8) or float32; the output
   (out_kind) float32 or uint8 (H, width, 3), or row_luma[r] = the sum over row r of the luma of
   the result (for the mean that contrast needs; dst unused). Each block of AJ_BLOCK pixels is
   read into planar float arrays (8-bit codes through the per-channel tables of the program's
   separable start), the rest of the program runs on 8-pixel vectors, and the block is written
   back interleaved. When the whole program is separable and codes go in and out, the tables are
   quantized and the image is mapped byte by byte. */
void pb_adjust_chain(const void *src, int src_u8, void *dst, int out_kind, int64_t width,
                     const float *prog, int64_t nsteps, const float *noise, int64_t r0,
                     int64_t r1, double *row_luma) {
  float tab[3][256];
  int64_t pre = 0;
  if (src_u8) {
    while (pre < nsteps && aj_separable((int)prog[pre * AJ_ROW])) pre++;
    for (int c = 0; c < 256; c += W) {
      vf v = {0, 1, 2, 3, 4, 5, 6, 7};
      vf r = (v + (float)c) / 255.0f, g = r, b = r;
      aj_apply(&r, &g, &b, prog, pre, noise, 0, 0, width);
      st(tab[0] + c, r), st(tab[1] + c, g), st(tab[2] + c, b);
    }
  }
  const float *rest = prog + pre * AJ_ROW;
  const int64_t nrest = nsteps - pre;
  const float shifter = 12582912.0f; /* 1.5 * 2^23: x + shifter keeps round(x) in the mantissa */
  if (src_u8 && nrest == 0 && out_kind == AJ_OUT_U8) {
    uint8_t q[3][256];
    for (int c = 0; c < 3; c++)
      for (int i = 0; i < 256; i++) {
        float v = tab[c][i] < 0.0f ? 0.0f : (tab[c][i] > 1.0f ? 1.0f : tab[c][i]);
        q[c][i] = (uint8_t)(int32_t)((v * 255.0f + shifter) - shifter);
      }
    const uint8_t *s = (const uint8_t *)src + r0 * width * 3;
    uint8_t *d = (uint8_t *)dst + r0 * width * 3;
    for (int64_t i = 0, n = (r1 - r0) * width; i < n; i++)
      d[3 * i] = q[0][s[3 * i]], d[3 * i + 1] = q[1][s[3 * i + 1]], d[3 * i + 2] = q[2][s[3 * i + 2]];
    return;
  }
  float R[AJ_BLOCK], G[AJ_BLOCK], B[AJ_BLOCK];
  for (int64_t row = r0; row < r1; row++) {
    double luma_sum = 0.0;
    for (int64_t col = 0; col < width; col += AJ_BLOCK) {
      const int64_t n = width - col < AJ_BLOCK ? width - col : AJ_BLOCK;
      const int64_t at = (row * width + col) * 3;
      if (src_u8) {
        const uint8_t *s = (const uint8_t *)src + at;
        for (int64_t i = 0; i < n; i++)
          R[i] = tab[0][s[3 * i]], G[i] = tab[1][s[3 * i + 1]], B[i] = tab[2][s[3 * i + 2]];
      } else {
        const float *s = (const float *)src + at;
        for (int64_t i = 0; i < n; i++) R[i] = s[3 * i], G[i] = s[3 * i + 1], B[i] = s[3 * i + 2];
      }
      for (int64_t i = n; i < AJ_BLOCK; i++) R[i] = G[i] = B[i] = 0.0f;
      for (int64_t i = 0; i < n; i += W) {
        vf r = ld(R + i), g = ld(G + i), b = ld(B + i);
        aj_apply(&r, &g, &b, rest, nrest, noise, row, col + i, width);
        if (out_kind == AJ_OUT_LUMA) {
          st(R + i, luma8(r, g, b));
        } else if (out_kind == AJ_OUT_U8) {
          st(R + i, vclip01(r) * 255.0f + shifter);
          st(G + i, vclip01(g) * 255.0f + shifter);
          st(B + i, vclip01(b) * 255.0f + shifter);
        } else {
          st(R + i, r), st(G + i, g), st(B + i, b);
        }
      }
      if (out_kind == AJ_OUT_LUMA) {
        for (int64_t i = 0; i < n; i++) luma_sum += R[i];
      } else if (out_kind == AJ_OUT_U8) {
        uint8_t *d = (uint8_t *)dst + at;
        for (int64_t i = 0; i < n; i++) {
          d[3 * i] = (uint8_t)(int32_t)(R[i] - shifter);
          d[3 * i + 1] = (uint8_t)(int32_t)(G[i] - shifter);
          d[3 * i + 2] = (uint8_t)(int32_t)(B[i] - shifter);
        }
      } else {
        float *d = (float *)dst + at;
        for (int64_t i = 0; i < n; i++) d[3 * i] = R[i], d[3 * i + 1] = G[i], d[3 * i + 2] = B[i];
      }
    }
    if (out_kind == AJ_OUT_LUMA) row_luma[row] = luma_sum;
  }
}
