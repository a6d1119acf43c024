/*
 * CBLAS forwarding shim for MLX's CPU backend on Linux.
 *
 * The mlx[cpu] wheel links libmlx against a bundled reference BLAS (~5 GFLOP/s for a
 * 1024^2 float32 matmul on a 2-core x86 machine). libmlx resolves exactly three CBLAS
 * symbols from it: cblas_sgemm, cblas_dgemm and cblas_cgemm. scipy-openblas32 (the
 * OpenBLAS build NumPy and SciPy ship, LP64, no libgfortran dependency) exports the
 * same functions under a `scipy_` prefix. This file defines the unprefixed names and
 * forwards them.
 *
 * Contract (see pbmlx/backend.py): libscipy_openblas.so is dlopen'ed with RTLD_GLOBAL,
 * then this library with RTLD_GLOBAL, both before mlx.core is first imported, so the
 * dynamic linker binds libmlx's undefined cblas_* references to the definitions below.
 * The scipy_cblas_* references here are left undefined at link time and are resolved
 * from the already-loaded OpenBLAS.
 *
 * This is not a Python extension module; it is built by setuptools only for packaging
 * and is loaded with ctypes.
 */

typedef int blasint; /* scipy-openblas32 is LP64: 32-bit integers, as CBLAS in libmlx expects */

extern void scipy_cblas_sgemm(int, int, int, blasint, blasint, blasint, float, const float *,
                              blasint, const float *, blasint, float, float *, blasint);
extern void scipy_cblas_dgemm(int, int, int, blasint, blasint, blasint, double, const double *,
                              blasint, const double *, blasint, double, double *, blasint);
extern void scipy_cblas_cgemm(int, int, int, blasint, blasint, blasint, const void *,
                              const void *, blasint, const void *, blasint, const void *, void *,
                              blasint);

void cblas_sgemm(int order, int ta, int tb, blasint m, blasint n, blasint k, float alpha,
                 const float *a, blasint lda, const float *b, blasint ldb, float beta, float *c,
                 blasint ldc) {
  scipy_cblas_sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int ta, int tb, blasint m, blasint n, blasint k, double alpha,
                 const double *a, blasint lda, const double *b, blasint ldb, double beta,
                 double *c, blasint ldc) {
  scipy_cblas_dgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int ta, int tb, blasint m, blasint n, blasint k, const void *alpha,
                 const void *a, blasint lda, const void *b, blasint ldb, const void *beta, void *c,
                 blasint ldc) {
  scipy_cblas_cgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
