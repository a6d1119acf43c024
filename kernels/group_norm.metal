// GroupNorm over channels-last activations x (B, HW, C), optionally fused with SiLU.
//
// One threadgroup of TG threads per (sample b, group g): grid (TG * B * G, 1, 1), threadgroup
// (TG, 1, 1). The group is the n = HW * C/G elements x[(b * HW + p) * C + g * C/G + k],
// p < HW, k < C/G, read by thread t at flat indices e = t, t + TG, ... (e = p * C/G + k), so
// neighbouring threads read neighbouring channels.
//   mean = sum(x) / n                      (pass 1)
//   var  = sum((x - mean)^2) / n           (pass 2: deviations, no cancellation)
//   y    = (x - mean) * rsqrt(var + eps) * weight[c] + bias[c]
//   SILU: y = y / (1 + exp(-y))
// Sums, statistics and y in float32 whatever x's type; each pass is a per-thread sum then a
// tree reduction in threadgroup memory. y is written as T.
// Template: T (output type), TG (threads per group, a power of two), SILU (bool).
// dims = (HW, C, G) as int32; eps: float32 (1 element).
// inputs: x, weight, bias, dims, eps
// outputs: y
//@header
//@body
const uint lid = thread_position_in_threadgroup.x;
const uint row = threadgroup_position_in_grid.x;  // b * G + g
const uint HW = uint(dims[0]);
const uint C = uint(dims[1]);
const uint G = uint(dims[2]);
const uint cpg = C / G;
const uint b = row / G;
const uint c0 = (row - b * G) * cpg;
const uint n = HW * cpg;
const size_t base = size_t(b) * HW * C + c0;
threadgroup float part[TG];

float mean = 0.0f;
float stat = 0.0f;
for (int pass = 0; pass < 2; ++pass) {
  float acc = 0.0f;
  for (uint e = lid; e < n; e += TG) {
    const uint p = e / cpg;
    const float d = float(x[base + size_t(p) * C + (e - p * cpg)]) - mean;
    acc += pass == 0 ? d : d * d;
  }
  part[lid] = acc;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint s = TG / 2; s > 0; s >>= 1) {
    if (lid < s) {
      part[lid] += part[lid + s];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  stat = part[0] / float(n);
  // Every thread has read part[0] before the next pass overwrites it.
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (pass == 0) {
    mean = stat;
  }
}
const float inv = metal::rsqrt(stat + eps[0]);

for (uint e = lid; e < n; e += TG) {
  const uint p = e / cpg;
  const uint k = e - p * cpg;
  const size_t i = base + size_t(p) * C + k;
  float v = (float(x[i]) - mean) * inv * float(weight[c0 + k]) + float(bias[c0 + k]);
  if (SILU) {
    v = v / (1.0f + metal::exp(-v));
  }
  y[i] = T(v);
}
