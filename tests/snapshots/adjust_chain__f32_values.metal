constant int PB_ROW = 16;

inline float pb_clip(float x) { return metal::clamp(x, 0.0f, 1.0f); }

inline float pb_decode(float x) {
  return x <= 0.04045f ? x / 12.92f : metal::pow((x + 0.055f) / 1.055f, 2.4f);
}

inline float pb_encode(float y) {
  y = metal::max(y, 0.0f);
  return y <= 0.0031308f ? y * 12.92f : 1.055f * metal::pow(y, 1.0f / 2.4f) - 0.055f;
}

inline float pb_luma(float r, float g, float b) { return r * 0.299f + g * 0.587f + b * 0.114f; }

// One program step on one pixel; p: the step's parameters (a copy in thread memory).
inline void pb_step(int op, thread const float* p, int row, int col, float n,
                    thread float& r, thread float& g, thread float& b) {
  switch (op) {
    case 0:  // gains in linear light (exposure, temperature, tint)
      r = pb_clip(pb_encode(pb_decode(r) * p[0]));
      g = pb_clip(pb_encode(pb_decode(g) * p[1]));
      b = pb_clip(pb_encode(pb_decode(b) * p[2]));
      break;
    case 1:  // brightness
      r = pb_clip(r + p[0] * r * (1.0f - r));
      g = pb_clip(g + p[0] * g * (1.0f - g));
      b = pb_clip(b + p[0] * b * (1.0f - b));
      break;
    case 2:  // contrast: p0 = 1 + a, p1 = mean luma
      r = pb_clip(p[1] + p[0] * (r - p[1]));
      g = pb_clip(p[1] + p[0] * (g - p[1]));
      b = pb_clip(p[1] + p[0] * (b - p[1]));
      break;
    case 3:  // gamma: p0 = 2 ** -a
      r = pb_clip(metal::pow(r, p[0]));
      g = pb_clip(metal::pow(g, p[0]));
      b = pb_clip(metal::pow(b, p[0]));
      break;
    case 4: {  // highlights
      float l = pb_luma(r, g, b);
      float d = p[0] * l * l * (1.0f - l);
      r = pb_clip(r + d);
      g = pb_clip(g + d);
      b = pb_clip(b + d);
      break;
    }
    case 5: {  // shadows
      float l = pb_luma(r, g, b);
      float d = p[0] * l * (1.0f - l) * (1.0f - l);
      r = pb_clip(r + d);
      g = pb_clip(g + d);
      b = pb_clip(b + d);
      break;
    }
    case 6:  // fade: p0 = lo, p1 = hi - lo
      r = pb_clip(p[0] + r * p[1]);
      g = pb_clip(p[0] + g * p[1]);
      b = pb_clip(p[0] + b * p[1]);
      break;
    case 7: {  // colour matrix (saturation, hue, grayscale): p0..p8 its columns
      float nr = r * p[0] + g * p[3] + b * p[6];
      float ng = r * p[1] + g * p[4] + b * p[7];
      float nb = r * p[2] + g * p[5] + b * p[8];
      r = pb_clip(nr);
      g = pb_clip(ng);
      b = pb_clip(nb);
      break;
    }
    case 8: {  // sepia: p0..p8 the tone matrix's columns, p9 = a
      float tr = pb_clip(r * p[0] + g * p[3] + b * p[6]);
      float tg = pb_clip(r * p[1] + g * p[4] + b * p[7]);
      float tb = pb_clip(r * p[2] + g * p[5] + b * p[8]);
      r = pb_clip(r + p[9] * (tr - r));
      g = pb_clip(g + p[9] * (tg - g));
      b = pb_clip(b + p[9] * (tb - b));
      break;
    }
    case 9: {  // vibrance
      float l = pb_luma(r, g, b);
      float c = metal::max(metal::max(r, g), b) - metal::min(metal::min(r, g), b);
      float f = 1.0f + p[0] * (1.0f - c);
      r = pb_clip(l + f * (r - l));
      g = pb_clip(l + f * (g - l));
      b = pb_clip(l + f * (b - l));
      break;
    }
    case 10:  // invert
      r = pb_clip(r + p[0] * (1.0f - 2.0f * r));
      g = pb_clip(g + p[0] * (1.0f - 2.0f * g));
      b = pb_clip(b + p[0] * (1.0f - 2.0f * b));
      break;
    case 11: {  // vignette: p0 = |a|, p1 = target, p2 = 0.5 - H/2, p3 = 0.5 - W/2, p4 = half diag
      float dy = (float(row) + p[2]) / p[4];
      float dx = (float(col) + p[3]) / p[4];
      float t = pb_clip((metal::sqrt(dy * dy + dx * dx) - 0.35f) / 0.65f);
      float k = p[0] * (t * t * (3.0f - 2.0f * t));
      r = pb_clip(r + k * (p[1] - r));
      g = pb_clip(g + k * (p[1] - g));
      b = pb_clip(b + k * (p[1] - b));
      break;
    }
    case 12: {  // grain: p0 = a * GRAIN_SIGMA * 4; n: this pixel's noise
      float l = pb_luma(r, g, b);
      float d = p[0] * l * (1.0f - l) * n;
      r = pb_clip(r + d);
      g = pb_clip(g + d);
      b = pb_clip(b + d);
      break;
    }
    default:
      break;
  }
}
template <typename TI, typename TO, bool IN_U8, int OUT>
[[kernel]] void custom_kernel_adjust_chain__float_float_0_0_float_float_floatc_int32_tc_float(
  const device float* src [[buffer(0)]],
  const device float* prog [[buffer(1)]],
  const constant float* noise [[buffer(2)]],
  const constant int32_t* dims [[buffer(3)]],
  device float* dst [[buffer(4)]],
  uint3 thread_position_in_grid [[thread_position_in_grid]]) {
  uint idx = thread_position_in_grid.x;
  int height = dims[0], width = dims[1], steps = dims[2];
  if (idx >= uint(height * width)) {
    return;
  }
  int row = int(idx) / width, col = int(idx) % width;
  float r = float(src[3 * idx]), g = float(src[3 * idx + 1]), b = float(src[3 * idx + 2]);
  if (IN_U8) {
    r = r / 255.0f;
    g = g / 255.0f;
    b = b / 255.0f;
  }
  for (int s = 0; s < steps; s++) {
    float p[16];
    for (int k = 0; k < 15; k++) {
      p[k] = prog[s * PB_ROW + 1 + k];
    }
    int op = int(prog[s * PB_ROW]);
    float n = op == 12 ? noise[idx] : 0.0f;
    pb_step(op, p, row, col, n, r, g, b);
  }
  if (OUT == 2) {
    dst[idx] = TO(pb_luma(r, g, b));
  } else if (OUT == 1) {
    dst[3 * idx] = TO(metal::rint(pb_clip(r) * 255.0f));
    dst[3 * idx + 1] = TO(metal::rint(pb_clip(g) * 255.0f));
    dst[3 * idx + 2] = TO(metal::rint(pb_clip(b) * 255.0f));
  } else {
    dst[3 * idx] = TO(r);
    dst[3 * idx + 1] = TO(g);
    dst[3 * idx + 2] = TO(b);
  }

}

template [[host_name("custom_kernel_adjust_chain__float_float_0_0_float_float_floatc_int32_tc_float")]] [[kernel]] decltype(custom_kernel_adjust_chain__float_float_0_0_float_float_floatc_int32_tc_float<float, float, 0, 0>) custom_kernel_adjust_chain__float_float_0_0_float_float_floatc_int32_tc_float<float, float, 0, 0>;
