// Helpers take values, never pointers: MLX passes size-1 inputs in the constant address space.
inline float guided_eps(float e_text, float e_img, float e_uncond, float g, float ig) {
  return (e_uncond + g * (e_text - e_img)) + ig * (e_img - e_uncond);
}

inline float sigma_update(float x, float e, float sigma, float dt, float x0_eps, float x0_div) {
  float x0 = x0_eps * e + x / x0_div;
  float derivative = (x - x0) / sigma;
  return x + derivative * dt;
}

inline float ddim_update(float x, float e, float x0_x, float x0_eps, float x0_div,
                         float hat_eps, float hat_x, float clip, float clip_range,
                         float a_x0, float a_dir) {
  float x0 = (x0_x * x - x0_eps * e) / x0_div;
  float eps_hat = hat_eps * e + hat_x * x;
  if (clip != 0.0f) {
    x0 = metal::clamp(x0, -clip_range, clip_range);
  }
  return a_x0 * x0 + a_dir * eps_hat;
}
template <int KIND, bool NOISE>
[[kernel]] void custom_kernel_guided_step__1_1_float_float_float_float_uint32_tc_float(
  const device float* eps3 [[buffer(0)]],
  const device float* x [[buffer(1)]],
  const device float* noise [[buffer(2)]],
  const device float* coef [[buffer(3)]],
  const constant uint32_t* count [[buffer(4)]],
  device float* x_next [[buffer(5)]],
  uint3 thread_position_in_grid [[thread_position_in_grid]]) {
uint i = thread_position_in_grid.x;
uint n = count[0];
if (i >= n) {
  return;
}
float e = guided_eps(float(eps3[i]), float(eps3[n + i]), float(eps3[2 * n + i]), coef[0], coef[1]);
float xv = float(x[i]);
float r;
float noise_std;
if (KIND == 0) {
  r = sigma_update(xv, e, coef[2], coef[3], coef[5], coef[6]);
  noise_std = coef[4];
} else {
  r = ddim_update(xv, e, coef[2], coef[3], coef[4], coef[5], coef[6], coef[7], coef[8],
                  coef[9], coef[10]);
  noise_std = coef[11];
}
if (NOISE) {
  r = r + noise_std * float(noise[i]);
}
x_next[i] = r;

}

template [[host_name("custom_kernel_guided_step__1_1_float_float_float_float_uint32_tc_float")]] [[kernel]] decltype(custom_kernel_guided_step__1_1_float_float_float_float_uint32_tc_float<1, 1>) custom_kernel_guided_step__1_1_float_float_float_float_uint32_tc_float<1, 1>;
