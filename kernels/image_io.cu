// CUDA twin of image_io.metal (same modes and float32 arithmetic; see that file).
//
// One element per thread over the flattened array: grid (n, 1, 1), block (TG, 1, 1); MLX
// launches whole blocks, so threads at or past n = size[0] return at once.
// Template: U (output type), MODE (0: uint8 -> [-1, 1], 1: [0, 1] -> [-1, 1],
// 2: [-1, 1] -> clamped [0, 1], 3: [-1, 1] -> uint8 rounded half to even).
// inputs: x, size
// outputs: y
//@header
// v / 255 correctly rounded for v in 0..255 (checked for all 256 values), as in the Metal body.
__device__ __forceinline__ float div255(float v) {
  const float q = v * (1.0f / 255.0f);
  return fmaf(fmaf(-q, 255.0f, v), 1.0f / 255.0f, q);
}
//@body
const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
if (i >= size_t(size[0])) {
  return;
}
const float v = static_cast<float>(x[i]);
float r;
if (MODE == 0) {
  r = div255(v) * 2.0f - 1.0f;
} else if (MODE == 1) {
  r = v * 2.0f - 1.0f;
} else {
  r = fminf(fmaxf(v * 0.5f + 0.5f, 0.0f), 1.0f);
  if (MODE == 3) {
    r = rintf(r * 255.0f);
  }
}
y[i] = U(r);
