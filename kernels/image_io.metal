// Image pre/post-processing for the diffusion models, one element per thread, any layout
// (elementwise over the flattened (H, W, C) or (B, H, W, C) array): grid (n, 1, 1),
// threadgroup (TG, 1, 1); threads at or past n = size[0] do nothing.
//   MODE 0, uint8 image -> model input:    y = fl(fl(x / 255) * 2) - 1
//   MODE 1, float in [0, 1] -> model input: y = fl(x * 2) - 1
//   MODE 2, model output -> float [0, 1]:   y = clamp(fl(x / 2) + 1/2, 0, 1)
//   MODE 3, model output -> uint8:          y = rint(fl(clamp(fl(x / 2) + 1/2, 0, 1) * 255))
// fl() is float32 rounding: the results are bit-identical to the same float32 NumPy / MLX
// expressions. x / 255 is correctly rounded without a division instruction (div255); the
// products by 2 and 1/2 are exact, so a fused multiply-add there changes nothing; rint rounds
// half to even (as np.rint).
// Template: U (output type), MODE.
// inputs: x, size
// outputs: y
//@header
// v / 255 correctly rounded for v in 0..255 (checked for all 256 values): the product by the
// rounded reciprocal, then one Newton correction with the exact residual v - q * 255.
inline float div255(float v) {
  const float q = v * (1.0f / 255.0f);
  return metal::fma(metal::fma(-q, 255.0f, v), 1.0f / 255.0f, q);
}
//@body
const uint i = thread_position_in_grid.x;
if (i >= uint(size[0])) {
  return;
}
const float v = float(x[i]);
float r;
if (MODE == 0) {
  r = div255(v) * 2.0f - 1.0f;
} else if (MODE == 1) {
  r = v * 2.0f - 1.0f;
} else {
  r = metal::clamp(v * 0.5f + 0.5f, 0.0f, 1.0f);
  if (MODE == 3) {
    r = metal::rint(r * 255.0f);
  }
}
y[i] = U(r);
