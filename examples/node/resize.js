'use strict';
// OpenCV's cv::resize for uint8 images, in plain JavaScript, so that the pixels fed to the
// model are the ones fusionedge's Python side feeds (fusionedge.preprocess uses OpenCV:
// INTER_AREA when the target has fewer pixels, INTER_LINEAR otherwise). No npm resizer
// (sharp/libvips, jimp, ...) computes the same pixels, and a pixel off by one moves the
// scores by more than the 1e-4 this example is tested to.
//
// Exact for a shrink (every factor >= 1 on both axes: the usual camera/photo case),
// with OpenCV's float32 arithmetic (Math.fround) and rounding (half to even). For an
// exact 2x shrink OpenCV's SIMD code rounds halves up ((sum + 2) >> 2): done here too.
// Enlarging (INTER_LINEAR, also OpenCV's "area" emulation when one axis grows) follows
// OpenCV's fixed-point arithmetic; its vertical step is the SIMD variant, which OpenCV
// uses for all but the last few values of a row, so those can differ by 1.
// See docs/PREPROCESSING.md, "Resize".

const f32 = Math.fround;

// cvRound: round half to even (lrint in the default rounding mode).
function roundHalfEven(x) {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function saturateU8(x) {
  return x < 0 ? 0 : x > 255 ? 255 : x;
}

// computeResizeAreaTab: which source samples (index, weight) make each target sample.
function areaTab(ssize, dsize, scale) {
  const tab = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale;
    const fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1);
    let sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push([dx, sx1 - 1, f32((sx1 - fsx1) / cellWidth)]);
    for (let sx = sx1; sx < sx2; sx++) tab.push([dx, sx, f32(1.0 / cellWidth)]);
    if (fsx2 - sx2 > 1e-3) {
      tab.push([dx, sx2, f32(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth)]);
    }
  }
  return tab;
}

// INTER_AREA with non-integer factors (ResizeArea_Invoker, float32 sums).
function resizeArea(src, sw, sh, cn, dw, dh) {
  const xtab = areaTab(sw, dw, 1 / (dw / sw));
  const ytab = areaTab(sh, dh, 1 / (dh / sh));
  const dn = dw * cn;
  const out = new Uint8Array(dh * dn);
  const buf = new Float64Array(dn);
  const sum = new Float64Array(dn);
  let prevDy = ytab[0][0];
  const flush = (dy) => {
    for (let i = 0; i < dn; i++) out[dy * dn + i] = saturateU8(roundHalfEven(sum[i]));
  };
  for (const [dy, sy, beta] of ytab) {
    buf.fill(0);
    const row = sy * sw * cn;
    for (const [dx, sx, alpha] of xtab) {
      for (let c = 0; c < cn; c++) {
        buf[dx * cn + c] = f32(buf[dx * cn + c] + f32(src[row + sx * cn + c] * alpha));
      }
    }
    if (dy !== prevDy) {
      flush(prevDy);
      for (let i = 0; i < dn; i++) sum[i] = f32(beta * buf[i]);
      prevDy = dy;
    } else {
      for (let i = 0; i < dn; i++) sum[i] = f32(sum[i] + f32(beta * buf[i]));
    }
  }
  flush(prevDy);
  return out;
}

// INTER_AREA with integer factors (resizeAreaFast): the mean of each block.
function resizeAreaFast(src, sw, sh, cn, dw, dh, ix, iy) {
  const out = new Uint8Array(dh * dw * cn);
  const area = ix * iy;
  const scale = f32(1 / area);
  for (let dy = 0; dy < dh; dy++) {
    for (let dx = 0; dx < dw; dx++) {
      for (let c = 0; c < cn; c++) {
        let s = 0;
        for (let y = 0; y < iy; y++) {
          for (let x = 0; x < ix; x++) s += src[((dy * iy + y) * sw + dx * ix + x) * cn + c];
        }
        const v = area === 4 ? (s + 2) >> 2 : roundHalfEven(f32(s * scale));
        out[(dy * dw + dx) * cn + c] = saturateU8(v);
      }
    }
  }
  return out;
}

// Source index and fixed-point weights (2048 = 1.0) of each target sample for
// INTER_LINEAR, or for OpenCV's "area" emulation when a factor is below 1.
function linearTab(ssize, dsize, areaMode) {
  const inv = dsize / ssize; // OpenCV's inv_scale, and scale = 1 / inv_scale
  const scale = 1 / inv;
  const idx = new Int32Array(dsize);
  const w = new Int32Array(dsize * 2);
  for (let d = 0; d < dsize; d++) {
    let s;
    let f;
    if (!areaMode) {
      f = f32((d + 0.5) * scale - 0.5);
      s = Math.floor(f);
      f = f32(f - s);
    } else {
      s = Math.floor(d * scale);
      f = f32(d + 1 - (s + 1) * inv);
      f = f <= 0 ? 0 : f32(f - Math.floor(f));
    }
    if (s < 0) {
      f = 0;
      s = 0;
    }
    if (s >= ssize - 1) {
      f = 0;
      s = ssize - 1;
    }
    idx[d] = s;
    w[2 * d] = roundHalfEven(f32(f32(1 - f) * 2048));
    w[2 * d + 1] = roundHalfEven(f32(f * 2048));
  }
  return { idx, w };
}

function resizeLinear(src, sw, sh, cn, dw, dh, areaMode) {
  const xt = linearTab(sw, dw, areaMode);
  const yt = linearTab(sh, dh, areaMode);
  const dn = dw * cn;
  // Horizontal pass on every source row (int32, exact).
  const rows = new Int32Array(sh * dn);
  for (let y = 0; y < sh; y++) {
    for (let dx = 0; dx < dw; dx++) {
      const s0 = xt.idx[dx];
      const s1 = Math.min(s0 + 1, sw - 1);
      for (let c = 0; c < cn; c++) {
        rows[y * dn + dx * cn + c] =
          src[(y * sw + s0) * cn + c] * xt.w[2 * dx] + src[(y * sw + s1) * cn + c] * xt.w[2 * dx + 1];
      }
    }
  }
  // Vertical pass, as OpenCV's VResizeLinearVec_32s8u: (hi16((a >> 4) * b0) +
  // hi16((b >> 4) * b1) + 2) >> 2.
  const out = new Uint8Array(dh * dn);
  const mulHi = (a, b) => Math.floor((a * b) / 65536);
  for (let dy = 0; dy < dh; dy++) {
    const y0 = yt.idx[dy];
    const y1 = Math.min(y0 + 1, sh - 1);
    const b0 = yt.w[2 * dy];
    const b1 = yt.w[2 * dy + 1];
    for (let i = 0; i < dn; i++) {
      const v = mulHi(rows[y0 * dn + i] >> 4, b0) + mulHi(rows[y1 * dn + i] >> 4, b1);
      out[dy * dn + i] = saturateU8((v + 2) >> 2);
    }
  }
  return out;
}

// cv2.resize(src, (dw, dh), interpolation) for uint8 HWC with cn channels.
function resize(src, sw, sh, cn, dw, dh, interpolation) {
  const scaleX = 1 / (dw / sw); // as OpenCV computes it: 1 / inv_scale
  const scaleY = 1 / (dh / sh);
  const ix = Math.round(scaleX);
  const iy = Math.round(scaleY);
  const areaFast = Math.abs(scaleX - ix) < Number.EPSILON && Math.abs(scaleY - iy) < Number.EPSILON;
  let mode = interpolation;
  if (mode === 'linear' && areaFast && ix === 2 && iy === 2) mode = 'area';
  if (mode === 'area' && scaleX >= 1 && scaleY >= 1) {
    return areaFast
      ? resizeAreaFast(src, sw, sh, cn, dw, dh, ix, iy)
      : resizeArea(src, sw, sh, cn, dw, dh);
  }
  return resizeLinear(src, sw, sh, cn, dw, dh, mode === 'area');
}

module.exports = { resize, roundHalfEven };
