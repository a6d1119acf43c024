// Index i reflected into [0, n): period 2n, the second half mirrored.
inline int pb_reflect(int i, int n) {
  int m = i % (2 * n);
  m = m < 0 ? m + 2 * n : m;
  return m >= n ? 2 * n - 1 - m : m;
}
template <int AXIS, int MODE>
[[kernel]] void custom_kernel_blur__1_2_float_float_float_int32_tc_floatc_float(
  const device float* src [[buffer(0)]],
  const device float* orig [[buffer(1)]],
  const device float* taps [[buffer(2)]],
  const constant int32_t* dims [[buffer(3)]],
  const constant float* params [[buffer(4)]],
  device float* dst [[buffer(5)]],
  uint3 thread_position_in_grid [[thread_position_in_grid]]) {
  uint idx = thread_position_in_grid.x;
  int height = dims[0], width = dims[1], radius = dims[2];
  if (idx >= uint(height * width * 3)) {
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
    acc = metal::clamp(acc, 0.0f, 1.0f);
  } else if (MODE == 2) {
    float x = orig[idx];
    acc = metal::clamp(x + params[0] * (x - acc), 0.0f, 1.0f);
  }
  dst[idx] = acc;

}

template [[host_name("custom_kernel_blur__1_2_float_float_float_int32_tc_floatc_float")]] [[kernel]] decltype(custom_kernel_blur__1_2_float_float_float_int32_tc_floatc_float<1, 2>) custom_kernel_blur__1_2_float_float_float_int32_tc_floatc_float<1, 2>;
