// CUDA twin of blur.metal (same arithmetic). One pass of the separable Gaussian blur: a direct
// 1-D convolution of a float32 (H, W, 3) image along one axis with 2r + 1 taps and
// half-sample symmetric edges (d c b a | a b c d | d c b a, repeated for axes shorter than r),
// one thread per value. Two passes (AXIS 0 along W, then AXIS 1 along H) make the blur; the
// second pass also finishes the op (MODE): 0 writes the convolution, 1 its clip to [0, 1] (the
// blur op), 2 the unsharp mask clip(orig + amount * (orig - convolution)). The reference is
// pbmlx.adjust.ops.gaussian_blur.
// Grid: (H * W * 3, 1, 1); block (256, 1, 1) (whole blocks run: threads past the image return
// at once). dims = [H, W, r]; params = [amount, 0].
// inputs: src, orig, taps, dims, params
// outputs: dst
//@header
// Index i reflected into [0, n): period 2n, the second half mirrored.
__device__ inline int pb_reflect(int i, int n) {
  int m = i % (2 * n);
  m = m < 0 ? m + 2 * n : m;
  return m >= n ? 2 * n - 1 - m : m;
}
//@body
  unsigned long long idx = cooperative_groups::this_grid().thread_rank();
  int height = dims[0], width = dims[1], radius = dims[2];
  if (idx >= 3ull * height * width) {
    return;
  }
  int c = int(idx) % 3;
  int pixel = int(idx) / 3;
  int row = pixel / width, col = pixel % width;
  float acc = 0.0f;
  for (int t = -radius; t <= radius; t++) {
    int at = AXIS == 0 ? (row * width + pb_reflect(col + t, width))
                       : (pb_reflect(row + t, height) * width + col);
    acc += taps[t + radius] * src[3 * at + c];
  }
  if (MODE == 1) {
    acc = fminf(fmaxf(acc, 0.0f), 1.0f);
  } else if (MODE == 2) {
    float x = orig[idx];
    acc = fminf(fmaxf(x + params[0] * (x - acc), 0.0f), 1.0f);
  }
  dst[idx] = acc;
