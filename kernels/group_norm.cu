// CUDA twin of group_norm.metal (same grid, same arithmetic; see that file for the formulas).
//
// One block of TG threads per (sample b, group g): grid (TG * B * G, 1, 1), block (TG, 1, 1);
// MLX launches B * G whole blocks. mean, then var of the deviations, each a per-thread sum and a
// tree reduction in shared memory, all in float32; then y = (x - mean) * rsqrt(var + eps) *
// weight + bias, SiLU fused when SILU, written as T.
// Template: T (output type), TG (threads per block, a power of two), SILU (bool).
// dims = (HW, C, G) as int32; eps: float32 (1 element).
// inputs: x, weight, bias, dims, eps
// outputs: y
//@header
//@body
const unsigned lid = threadIdx.x;
const unsigned row = blockIdx.x;  // b * G + g
const unsigned HW = unsigned(dims[0]);
const unsigned C = unsigned(dims[1]);
const unsigned G = unsigned(dims[2]);
const unsigned cpg = C / G;
const unsigned b = row / G;
const unsigned c0 = (row - b * G) * cpg;
const unsigned n = HW * cpg;
const size_t base = size_t(b) * HW * C + c0;
__shared__ float part[TG];

float mean = 0.0f;
float stat = 0.0f;
for (int pass = 0; pass < 2; ++pass) {
  float acc = 0.0f;
  for (unsigned e = lid; e < n; e += TG) {
    const unsigned p = e / cpg;
    const float d = static_cast<float>(x[base + size_t(p) * C + (e - p * cpg)]) - mean;
    acc += pass == 0 ? d : d * d;
  }
  part[lid] = acc;
  __syncthreads();
  for (unsigned s = TG / 2; s > 0; s >>= 1) {
    if (lid < s) {
      part[lid] += part[lid + s];
    }
    __syncthreads();
  }
  stat = part[0] / static_cast<float>(n);
  // Every thread has read part[0] before the next pass overwrites it.
  __syncthreads();
  if (pass == 0) {
    mean = stat;
  }
}
const float inv = rsqrtf(stat + eps[0]);

for (unsigned e = lid; e < n; e += TG) {
  const unsigned p = e / cpg;
  const unsigned k = e - p * cpg;
  const size_t i = base + size_t(p) * C + k;
  float v = (static_cast<float>(x[i]) - mean) * inv * static_cast<float>(weight[c0 + k]) +
            static_cast<float>(bias[c0 + k]);
  if (SILU) {
    v = v / (1.0f + expf(-v));
  }
  y[i] = T(v);
}
