
template <typename T, int TG, bool SILU>
[[kernel]] void custom_kernel_group_norm__bfloat16_t_256_1_bfloat16_t_bfloat16_t_bfloat16_t_int32_tc_floatc_bfloat16_t(
  const device bfloat16_t* x [[buffer(0)]],
  const device bfloat16_t* weight [[buffer(1)]],
  const device bfloat16_t* bias [[buffer(2)]],
  const constant int32_t* dims [[buffer(3)]],
  const constant float* eps [[buffer(4)]],
  device bfloat16_t* y [[buffer(5)]],
  uint3 thread_position_in_threadgroup [[thread_position_in_threadgroup]],
  uint3 threadgroup_position_in_grid [[threadgroup_position_in_grid]]) {
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

}

template [[host_name("custom_kernel_group_norm__bfloat16_t_256_1_bfloat16_t_bfloat16_t_bfloat16_t_int32_tc_floatc_bfloat16_t")]] [[kernel]] decltype(custom_kernel_group_norm__bfloat16_t_256_1_bfloat16_t_bfloat16_t_bfloat16_t_int32_tc_floatc_bfloat16_t<bfloat16_t, 256, 1>) custom_kernel_group_norm__bfloat16_t_256_1_bfloat16_t_bfloat16_t_bfloat16_t_int32_tc_floatc_bfloat16_t<bfloat16_t, 256, 1>;
