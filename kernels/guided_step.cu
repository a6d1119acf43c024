// guided_step (CUDA twin of guided_step.metal; same formulas, coefficient layout and order of
// float32 operations): dual classifier-free guidance fused with one sampler step.
// One thread per latent element i < n; MLX launches whole blocks, so the body guards i < n.
//   eps  = e_uncond + coef[0] (e_text - e_img) + coef[1] (e_img - e_uncond)
//          with e_text = eps3[i], e_img = eps3[n + i], e_uncond = eps3[2 n + i]
//   KIND 0 ("sigma"), coef[2..6] = sigma, dt, noise_std, x0_eps, x0_div:
//          x0 = x0_eps eps + x / x0_div;  x' = x + (x - x0) / sigma * dt
//   KIND 1 ("ddim"), coef[2..11] = x0_x, x0_eps, x0_div, hat_eps, hat_x, clip, clip_range,
//          a_x0, a_dir, noise_std:
//          x0 = (x0_x x - x0_eps eps) / x0_div (clamped to +-clip_range if clip != 0)
//          x' = a_x0 x0 + a_dir (hat_eps eps + hat_x x)
//   NOISE: x' += noise_std * noise[i].
// inputs: eps3, x, noise, coef, count
// outputs: x_next
//@header
// float16 inputs arrive as __half; converted explicitly (no reliance on implicit conversions).
__device__ __forceinline__ float gs_load(float v) { return v; }
__device__ __forceinline__ float gs_load(__half v) { return __half2float(v); }

__device__ __forceinline__ float gs_guided_eps(float e_text, float e_img, float e_uncond, float g,
                                               float ig) {
  return (e_uncond + g * (e_text - e_img)) + ig * (e_img - e_uncond);
}

__device__ __forceinline__ float gs_sigma_update(float x, float e, float sigma, float dt,
                                                 float x0_eps, float x0_div) {
  float x0 = x0_eps * e + x / x0_div;
  float derivative = (x - x0) / sigma;
  return x + derivative * dt;
}

__device__ __forceinline__ float gs_ddim_update(float x, float e, float x0_x, float x0_eps,
                                                float x0_div, float hat_eps, float hat_x,
                                                float clip, float clip_range, float a_x0,
                                                float a_dir) {
  float x0 = (x0_x * x - x0_eps * e) / x0_div;
  float eps_hat = hat_eps * e + hat_x * x;
  if (clip != 0.0f) {
    x0 = fminf(fmaxf(x0, -clip_range), clip_range);
  }
  return a_x0 * x0 + a_dir * eps_hat;
}
//@body
unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
unsigned int n = count[0];
if (i >= n) {
  return;
}
float e = gs_guided_eps(gs_load(eps3[i]), gs_load(eps3[n + i]), gs_load(eps3[2 * n + i]),
                        coef[0], coef[1]);
float xv = gs_load(x[i]);
float r;
float noise_std;
if (KIND == 0) {
  r = gs_sigma_update(xv, e, coef[2], coef[3], coef[5], coef[6]);
  noise_std = coef[4];
} else {
  r = gs_ddim_update(xv, e, coef[2], coef[3], coef[4], coef[5], coef[6], coef[7], coef[8],
                     coef[9], coef[10]);
  noise_std = coef[11];
}
if (NOISE) {
  r = r + noise_std * gs_load(noise[i]);
}
x_next[i] = r;
