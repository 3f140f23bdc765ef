"""The multi-crop's CPU kernels compiled with numba: one call renders a crop (crop, antialiased
bicubic resize, flip, colour jitter, grayscale, blur, solarize, normalisation) from the uint8 image.

The same float32 formulas as the torch path (color.py, geometry.py), fused: no temporaries but
two small buffers, one pass per operation instead of the torch path's several kernels each.
numba compiles without fast-math (no reassociation, no contraction into fused multiply-adds), so a
crop has the same bits on every x86 or ARM CPU; against the torch path it differs only by float32
rounding (torch's resize kernel is compiled with contraction, its weights are rounded through
float32): at most a few 1e-7 before normalisation (tests/data_augment/test_numba_backend.py).

Import this module only where numba is installed (`backend.numba_available`).
"""

from __future__ import annotations

import numba
import numpy as np

_OPTS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy", "boundscheck": False}

# Jitter op ids (photometric.BRIGHTNESS ... HUE) and the ITU-R 601-2 luma weights as float32.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
_WR, _WG, _WB = np.float32(0.299), np.float32(0.587), np.float32(0.114)
_ONE, _ZERO = np.float32(1.0), np.float32(0.0)


@numba.njit(**_OPTS)
def _clamp01(v):
    return _ZERO if v < _ZERO else (_ONE if v > _ONE else v)


@numba.njit(**_OPTS)
def _horizontal(src, from_u8, top, left, h, w, x0, wx, tmp, flat):
    """tmp[c, :h, :S] <- the crop's rows resized along the width (taps wx [S, T]). Done on the
    transposed crop, so that every tap is a multiply-add over a contiguous column (vectorised),
    not a gather: the crop goes into `flat` as [w, h] per channel, the taps make [S, h], which is
    transposed into tmp. Same products, same order, same bits as the per-row loop."""
    size, taps = wx.shape
    inv = np.float32(255.0)
    cols = flat[: w * h].reshape((w, h))
    res = flat[w * h : w * h + size * h].reshape((size, h))
    for c in range(3):
        for y in range(h):
            line = src[c, top + y]
            if from_u8:
                for k in range(w):
                    cols[k, y] = np.float32(line[left + k]) / inv  # = uint8 -> float32 / 255
            else:
                for k in range(w):
                    cols[k, y] = line[left + k]
        for x in range(size):
            base = x0[x]
            o = res[x]
            first = cols[base]
            w0 = wx[x, 0]
            for y in range(h):
                o[y] = first[y] * w0
            for j in range(1, taps):
                col = cols[base + j]
                wj = wx[x, j]
                for y in range(h):
                    o[y] += col[y] * wj
        for y in range(h):
            for x in range(size):
                tmp[c, y, x] = res[x, y]


@numba.njit(**_OPTS)
def _vertical(tmp, y0, wy, out):
    """out[c, y, :] <- clamp01(sum_j wy[y, j] tmp[c, y0[y] + j, :]): contiguous rows, vectorised."""
    size, taps = wy.shape
    width = out.shape[2]
    for c in range(3):
        for y in range(size):
            base = y0[y]
            o = out[c, y]
            first = tmp[c, base]
            w0 = wy[y, 0]
            for x in range(width):
                o[x] = first[x] * w0
            for j in range(1, taps):
                line = tmp[c, base + j]
                wj = wy[y, j]
                for x in range(width):
                    o[x] += line[x] * wj
            for x in range(width):
                o[x] = _clamp01(o[x])


@numba.njit(**_OPTS)
def _luma_mean(x):
    """Mean luma of a [3, H, W] crop, accumulated in float64 (as adjust_contrast_), as float32."""
    r, g, b = x[0], x[1], x[2]
    total = 0.0
    for i in range(r.shape[0]):
        for k in range(r.shape[1]):
            total += np.float64(r[i, k] * _WR + g[i, k] * _WG + b[i, k] * _WB)
    return np.float32(total / (r.shape[0] * r.shape[1]))


@numba.njit(**_OPTS)
def _blend_scalar(x, factor, other):
    """x <- clamp01(x f + other (1 - f)) with a scalar `other` (contrast)."""
    rest = other * (_ONE - factor)
    for c in range(3):
        for i in range(x.shape[1]):
            for k in range(x.shape[2]):
                x[c, i, k] = _clamp01(x[c, i, k] * factor + rest)


@numba.njit(**_OPTS)
def _saturation(x, factor):
    keep = _ONE - factor
    for i in range(x.shape[1]):
        for k in range(x.shape[2]):
            r, g, b = x[0, i, k], x[1, i, k], x[2, i, k]
            grey = (r * _WR + g * _WG + b * _WB) * keep
            x[0, i, k] = _clamp01(r * factor + grey)
            x[1, i, k] = _clamp01(g * factor + grey)
            x[2, i, k] = _clamp01(b * factor + grey)


@numba.njit(**_OPTS)
def _channel(n, h6, v, vs):
    k = n + h6
    k = k - np.floor(k / np.float32(6.0)) * np.float32(6.0)
    ramp = min(k, np.float32(4.0) - k)
    ramp = _ZERO if ramp < _ZERO else (_ONE if ramp > _ONE else ramp)
    return _clamp01(v - ramp * vs)


@numba.njit(**_OPTS)
def _hue(x, shift):
    """RGB -> HSV, hue + shift (mod 1), -> RGB, per pixel (adjust_hue_'s formulas)."""
    tiny = np.float32(np.finfo(np.float32).tiny)
    six = np.float32(6.0)
    for i in range(x.shape[1]):
        for k in range(x.shape[2]):
            r, g, b = x[0, i, k], x[1, i, k], x[2, i, k]
            maxc = max(max(r, g), b)
            delta = maxc - min(min(r, g), b)
            d = delta if delta > tiny else tiny
            if maxc == r:
                h6 = (g - b) / d
            elif maxc == g:
                h6 = (b - r) / d + np.float32(2.0)
            else:
                h6 = (r - g) / d + np.float32(4.0)
            h = h6 / six
            h = h - np.floor(h)
            h = h + shift
            h = (h - np.floor(h)) * six
            m = maxc if maxc > tiny else tiny
            vs = delta / m * maxc
            x[0, i, k] = _channel(np.float32(5.0), h, maxc, vs)
            x[1, i, k] = _channel(np.float32(3.0), h, maxc, vs)
            x[2, i, k] = _channel(np.float32(1.0), h, maxc, vs)


@numba.njit(**_OPTS)
def _grayscale(x):
    for i in range(x.shape[1]):
        for k in range(x.shape[2]):
            grey = x[0, i, k] * _WR + x[1, i, k] * _WG + x[2, i, k] * _WB
            x[0, i, k] = grey
            x[1, i, k] = grey
            x[2, i, k] = grey


@numba.njit(**_OPTS)
def _reflect(i, n):
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


@numba.njit(**_OPTS)
def _blur(x, weights, tmp, row):
    """Separable Gaussian blur with reflect padding, rows then columns (gaussian_blur_'s order)."""
    taps = weights.shape[0]
    pad = taps // 2
    height, width = x.shape[1], x.shape[2]
    for c in range(3):
        for i in range(height):
            line = x[c, i]
            for k in range(width + 2 * pad):
                row[k] = line[_reflect(k - pad, width)]
            out = tmp[i]
            w0 = weights[0]
            for k in range(width):
                out[k] = row[k] * w0
            for j in range(1, taps):
                wj = weights[j]
                for k in range(width):
                    out[k] += row[k + j] * wj
        for i in range(height):
            o = x[c, i]
            first = tmp[_reflect(i - pad, height)]
            w0 = weights[0]
            for k in range(width):
                o[k] = first[k] * w0
            for j in range(1, taps):
                line = tmp[_reflect(i - pad + j, height)]
                wj = weights[j]
                for k in range(width):
                    o[k] += line[k] * wj


@numba.njit(**_OPTS)
def _normalize(x, mean, std):
    """(x - mean) / std per channel (normalize_'s division, not a multiplication by 1 / std)."""
    for c in range(3):
        m, s = mean[c], std[c]
        for i in range(x.shape[1]):
            for k in range(x.shape[2]):
                x[c, i, k] = (x[c, i, k] - m) / s


@numba.njit(**_OPTS)
def _solarize(x, threshold):
    for c in range(3):
        for i in range(x.shape[1]):
            for k in range(x.shape[2]):
                if x[c, i, k] >= threshold:
                    x[c, i, k] = _ONE - x[c, i, k]


@numba.njit(**_OPTS)
def _photometric(x, jitter, order, factors, grayscale, blur, solarize, threshold, tmp, row):
    if jitter:
        for position in range(4):
            op = order[position]
            f = factors[op]
            if op == _BRIGHTNESS:
                for c in range(3):
                    for i in range(x.shape[1]):
                        for k in range(x.shape[2]):
                            x[c, i, k] = _clamp01(x[c, i, k] * f)
            elif op == _CONTRAST:
                _blend_scalar(x, f, _luma_mean(x))
            elif op == _SATURATION:
                _saturation(x, f)
            else:
                _hue(x, f)
    if grayscale:
        _grayscale(x)
    if blur.shape[0] > 0:
        _blur(x, blur, tmp, row)
    if solarize:
        _solarize(x, threshold)


@numba.njit(**_OPTS)
def render_crop(src, from_u8, top, left, h, w, x0, wx, y0, wy, out, tmp, row,
                photometric, jitter, order, factors, grayscale, blur, solarize, threshold,
                normalize, mean, std):
    """Crop (top, left, h, w) of src ([3, H, W]; uint8 if from_u8, else float32 in [0, 1]),
    resized to out ([3, S, S] float32) with the taps (x0, wx) along the width (mirrored for a
    flip) and (y0, wy) along the height, clamped to [0, 1]; then, with `photometric`, the crop's
    colour operations, and with `normalize`, (x - mean) / std. Buffers: tmp float32
    [3, >= max(h, S), S] (also the blur's), row float32 [>= max((w + S) h, S + blur taps)]."""
    _horizontal(src, from_u8, top, left, h, w, x0, wx, tmp, row)
    _vertical(tmp, y0, wy, out)
    if photometric:
        _photometric(out, jitter, order, factors, grayscale, blur, solarize, threshold, tmp[0], row)
    if normalize:
        _normalize(out, mean, std)
