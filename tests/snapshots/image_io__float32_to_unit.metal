// v / 255 correctly rounded for v in 0..255 (checked for all 256 values): the product by the
// rounded reciprocal, then one Newton correction with the exact residual v - q * 255.
inline float div255(float v) {
  const float q = v * (1.0f / 255.0f);
  return metal::fma(metal::fma(-q, 255.0f, v), 1.0f / 255.0f, q);
}
template <typename U, int MODE>
[[kernel]] void custom_kernel_image_io__float_2_float_int32_tc_float(
  const device float* x [[buffer(0)]],
  const constant int32_t* size [[buffer(1)]],
  device float* y [[buffer(2)]],
  uint3 thread_position_in_grid [[thread_position_in_grid]]) {
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

}

template [[host_name("custom_kernel_image_io__float_2_float_int32_tc_float")]] [[kernel]] decltype(custom_kernel_image_io__float_2_float_int32_tc_float<float, 2>) custom_kernel_image_io__float_2_float_int32_tc_float<float, 2>;
