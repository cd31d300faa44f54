"""Low-precision emulation for the reference model: E4M3 and BF16 rounding on float32 tensors, the
fine-grained FP8 quantisers (1x128 activation tiles, 128x128 weight blocks, spec §5.2 / §11.9) and
the FP8 and BF16 Linear products with their backward GEMMs. torch 1.13 has no float8 dtype, so the
rounding is done on the bits. Not here: the model (deepseek_v3_model.py).

The quantiser follows kernels/cpu/quantize.h exactly (every op IEEE FP32, round to nearest even):
    amax = max|x| over the tile (a partial tile acts as if zero-padded)
    s    = max(amax, float32(1e-4)) / 448          (a true FP32 division)
    inv  = 1 / s                                   (FP32)
    q    = e4m3(fp32(x * inv))                     (RNE, saturating to +-448)
    x'   = q * s                                   (dequantised, FP32)
With power-of-two (UE8M0) scales, s = 2^ceil(log2(s)) exactly; the routed experts use them for the
rows an expert-parallel dispatch carries (docs/decisions.md, "FP8 dispatch").
The FP8 GEMM follows kernels/cpu/gemm.h bit for bit: per 128-element K block an FP32 sum of the
exact code products in a fixed order, then C = fma(P, s_a * s_b, C) across blocks in order.
"""
import bisect
import math

import torch

E4M3_MAX = 448.0
TILE = 128
AMAX_FLOOR = float(torch.tensor(1e-4, dtype=torch.float32))  # the FP32 value of 1e-4

# ---- Scalar E4M3 (the slow, obviously-correct definition; used to test the fast one) -------------


def e4m3_code_values():
    """The 256 E4M3 codes (1.4.3, bias 7, 'fn': no infinities, S.1111.111 = NaN) -> float value."""
    values = []
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exp = (code >> 3) & 0xF
        man = code & 0x7
        if exp == 0xF and man == 0x7:
            values.append(math.nan)
        elif exp == 0:
            values.append(sign * man * 2.0 ** -9)
        else:
            values.append(sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7))
    return values


_POSITIVE = sorted((v, c) for c, v in enumerate(e4m3_code_values()[:0x7F]))  # codes 0..126


def e4m3_round_scalar(x):
    """Round a Python float to the nearest E4M3 value: ties to the even code, saturation to +-448
    (also for +-inf), NaN -> NaN. The sign of zero is kept."""
    if math.isnan(x):
        return math.nan
    a = abs(x)
    if a >= E4M3_MAX:
        r = E4M3_MAX
    else:
        vals = [v for v, _ in _POSITIVE]
        i = bisect.bisect_left(vals, a)
        if vals[i] == a:
            r = a
        else:
            lo_v, lo_c = _POSITIVE[i - 1]
            hi_v, hi_c = _POSITIVE[i]
            d_lo, d_hi = a - lo_v, hi_v - a
            if d_lo < d_hi or (d_lo == d_hi and lo_c % 2 == 0):
                r = lo_v
            else:
                r = hi_v
    return math.copysign(r, x)


# ---- Fast tensor rounding (bit manipulation on float32) ------------------------------------------


def _f32_bits(x):
    return x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF


def _bits_f32(bits):
    b = bits & 0xFFFFFFFF
    b = torch.where(b >= 2 ** 31, b - 2 ** 32, b)
    return b.to(torch.int32).view(torch.float32)


def e4m3_round(x):
    """float32 tensor -> float32 tensor of the nearest E4M3 values (RNE at every binade and in the
    subnormal range, saturating to +-448, NaN stays NaN, sign of zero kept). Mirrors
    kernels/cpu/fp8.h FloatToE4M3 followed by E4M3ToFloat."""
    assert x.dtype == torch.float32
    bits = _f32_bits(x)
    sign = bits & 0x80000000
    mag = bits & 0x7FFFFFFF
    # Normal range |x| >= 2^-6: drop 20 of the 23 mantissa bits with round-to-nearest-even.
    rounded = (mag + 0x7FFFF + ((mag >> 20) & 1)) & ~0xFFFFF
    rounded = torch.clamp(rounded, max=0x43E00000)  # saturate at 448 (also +-inf)
    normal = _bits_f32(rounded)
    # Subnormal range: adding 2^14 (ulp 2^-9) rounds |x| to a multiple of 2^-9, ties to even.
    a = x.abs()
    sub = (a + 16384.0) - 16384.0
    out = torch.where(mag >= 0x3C800000, normal, sub)
    out = torch.where(sign != 0, -out, out)
    return torch.where(torch.isnan(x), x, out)


def bf16_round(x):
    """float32 tensor -> float32 tensor rounded to BF16 (RNE; overflow to +-inf; NaN kept)."""
    assert x.dtype == torch.float32
    bits = _f32_bits(x)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = _bits_f32(rounded)
    return torch.where(torch.isnan(x), x, out)


# ---- Fine-grained quantisation -------------------------------------------------------------------


def _pad_to_tiles(x, dim):
    n = x.shape[dim]
    pad = (-n) % TILE
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, torch.zeros(shape, dtype=x.dtype)], dim=dim)


def _round_up_to_power_of_two(s):
    """2^ceil(log2(s)) of positive float32 s, exact from the bits (inf and NaN unchanged)."""
    bits = _f32_bits(s)
    exponent = bits & 0x7F800000
    up = torch.where((bits & 0x7FFFFF) != 0, exponent + 0x800000, exponent)
    return torch.where(exponent == 0x7F800000, s, _bits_f32(up))


def _scale_from_amax(amax, ue8m0=False):
    s = torch.clamp(amax, min=AMAX_FLOOR) / E4M3_MAX  # FP32 division; NaN propagates
    if ue8m0:
        s = _round_up_to_power_of_two(s)
    inv = torch.ones_like(s) / s
    return s, inv


def quantize_1x128(x, ue8m0=False):
    """Activations [M, K] float32 in 1x128 tiles along K (power-of-two scales with ue8m0).
    Returns q [M, Kp] (E4M3 values as float32, K zero-padded to a multiple of 128) and
    s [M, Kp/128] float32 scales."""
    m = x.shape[0]
    xp = _pad_to_tiles(x.contiguous(), 1)
    tiles = xp.view(m, -1, TILE)
    s, inv = _scale_from_amax(tiles.abs().amax(dim=2), ue8m0)
    q = e4m3_round(tiles * inv[:, :, None])
    return q.view(m, -1), s


def quantize_128x128(w):
    """Weights [N, K] float32 in 128x128 blocks. Returns Q [Np, Kp] (both dims zero-padded to
    multiples of 128; E4M3 values as float32) and S [Np/128, Kp/128]."""
    wp = _pad_to_tiles(_pad_to_tiles(w.contiguous(), 0), 1)
    nb, kb = wp.shape[0] // TILE, wp.shape[1] // TILE
    blocks = wp.view(nb, TILE, kb, TILE)
    s, inv = _scale_from_amax(blocks.abs().amax(dim=(1, 3)))
    q = e4m3_round(blocks * inv[:, None, :, None])
    return q.view(nb * TILE, kb * TILE), s


def dequantize_1x128(q, s):
    """x'[m, k] = q[m, k] * s[m, k / 128] in FP32 (shapes as quantize_1x128 returns them)."""
    return (q.reshape(q.shape[0], -1, TILE) * s[:, :, None]).reshape(q.shape)


def fma_f32(a, b, c):
    """Exact FP32 fused multiply-add fl32(a*b + c) of float32 tensors (finite values), emulated in
    float64: a*b is exact there, the sum's rounding error is recovered with TwoSum, and a sum that
    lands exactly on a midpoint between two floats is rounded the way the exact value lies."""
    prod = a.double() * b.double()
    cd = c.double()
    total = prod + cd
    bb = total - prod
    err = (prod - (total - bb)) + (cd - bb)  # total + err == prod + cd exactly
    r = total.float()
    r64 = r.double()
    other = 2 * total - r64  # the other float neighbour when total is a midpoint
    midpoint = (total != r64) & (other.float().double() == other)
    toward_other = ((err > 0) & (other > r64)) | ((err < 0) & (other < r64))
    return torch.where(midpoint & toward_other, other.float(), r)


def fp8_gemm(qa, sa, a_rows_per_scale, qb, sb, b_rows_per_scale):
    """C = A . B^T with per-K-block dequantisation, in the exact arithmetic of kernels/cpu/gemm.h:
      C = 0; for each K block kb in order:
        P = +0; for pairs p = 0..63: P = P + a[2p+1] b[2p+1]; P = P + a[2p] b[2p]   (FP32 sums of
            exact FP32 products, the order of AVX-512 vdpbf16ps)
        C = fma(P, fp32(s_a[m, kb] * s_b[n, kb]), C)
    qa [Ma, Kp], qb [Nb, Kp]: E4M3 values as float32, Kp a multiple of 128;
    sa [ceil(Ma / a_rows_per_scale), Kp/128], sb likewise; rows_per_scale is 1 (1x128 tiles) or
    128 (128x128 blocks). Returns C [Ma, Nb] float32."""
    ma, nb = qa.shape[0], qb.shape[0]
    sa_rows = sa.repeat_interleave(a_rows_per_scale, dim=0)[:ma]
    sb_rows = sb.repeat_interleave(b_rows_per_scale, dim=0)[:nb]
    qat, qbt = qa.T.contiguous(), qb.T.contiguous()  # [Kp, Ma], [Kp, Nb]: row k is column k
    # Columns where either operand is all zero add exact zeros, which leave P unchanged (P is
    # never -0), so they are skipped; the zero padding of a partial tile is such a column.
    live = ((qat != 0).any(1) & (qbt != 0).any(1)).tolist()
    c = torch.zeros(ma, nb, dtype=torch.float32)
    for kb in range(qa.shape[1] // TILE):
        p = torch.zeros(ma, nb, dtype=torch.float32)
        for pair in range(TILE // 2):
            for k in (kb * TILE + 2 * pair + 1, kb * TILE + 2 * pair):
                if live[k]:
                    p.addr_(qat[k], qbt[k])  # p + a b^T: the product is exact, one rounding
        scale = sa_rows[:, kb][:, None] * sb_rows[:, kb][None, :]
        c = fma_f32(p, scale, c)
    return c


def round_through_e4m3_ue8m0(x):
    """x [M, K] float32 -> its FP8 value in 1x128 tiles with power-of-two scales."""
    q, s = quantize_1x128(x, ue8m0=True)
    return dequantize_1x128(q, s)[:, :x.shape[1]]


class Fp8Linear(torch.autograd.Function):
    """y = x . w^T with all three GEMMs in E4M3 (spec §5.4, §11.9, kernels/cpu/quantize.h):
      Fprop  y  = x . w^T : x in 1x128 tiles along K, w in 128x128 blocks
      Dgrad  dx = dy . w  : dy in 1x128 tiles along N; w's blocks transposed (no re-quantisation)
      Wgrad  dw = dy^T . x: dy in 128x1 tiles (1x128 along the tokens of dy^T), and the cached x
                            dequantised from its 1x128 tiles and re-quantised as 128x1 tiles.
    x [M, K], w [N, K] float32; y [M, N] float32.
    dispatched_x: x's 1x128 scales are powers of two (the rows an expert-parallel dispatch
    carries); dispatched_dy: dy is first rounded to FP8 with power-of-two scales (the backward
    dispatch), and both backward GEMMs use that (the Dgrad's 1x128 tiles with the same scales)."""

    @staticmethod
    def forward(ctx, x, w, dispatched_x=False, dispatched_dy=False):
        x, w = x.contiguous(), w.contiguous()
        m, k = x.shape
        n = w.shape[0]
        xq, xs = quantize_1x128(x, ue8m0=dispatched_x)
        wq, ws = quantize_128x128(w)
        y = fp8_gemm(xq, xs, 1, wq, ws, TILE)[:m, :n]
        ctx.save_for_backward(xq, xs, wq, ws)
        ctx.dims = (m, k, n)
        ctx.dispatched_dy = dispatched_dy
        return y

    @staticmethod
    def backward(ctx, dy):
        xq, xs, wq, ws = ctx.saved_tensors
        m, k, n = ctx.dims
        dy = dy.contiguous().float()
        if ctx.dispatched_dy:
            dy = round_through_e4m3_ue8m0(dy)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dyq, dys = quantize_1x128(dy, ue8m0=ctx.dispatched_dy)  # [M, Np]
            # B = w^T [Kp, Np]: the codes and the block scales transposed.
            dx = fp8_gemm(dyq, dys, 1, wq.T.contiguous(), ws.T.contiguous(), TILE)[:m, :k]
        if ctx.needs_input_grad[1]:
            dytq, dyts = quantize_1x128(dy.T.contiguous())  # dy^T [N, Mp], tiles along tokens
            xr = dequantize_1x128(xq, xs)[:, :k]  # [M, K]
            xtq, xts = quantize_1x128(xr.T.contiguous())  # x^T [K, Mp]
            dw = fp8_gemm(dytq, dyts, 1, xtq, xts, 1)[:n, :k]
        return dx, dw, None, None


class Bf16Linear(torch.autograd.Function):
    """y = x . w^T with every GEMM operand rounded to BF16 (RNE) and FP32 accumulation, also in the
    backward: dx = bf16(dy) . bf16(w), dw = bf16(dy)^T . bf16(x). x [M, K], w [N, K] float32."""

    @staticmethod
    def forward(ctx, x, w):
        xb, wb = bf16_round(x.contiguous()), bf16_round(w.contiguous())
        ctx.save_for_backward(xb, wb)
        return xb @ wb.T

    @staticmethod
    def backward(ctx, dy):
        xb, wb = ctx.saved_tensors
        dyb = bf16_round(dy.contiguous().float())
        dx = dyb @ wb if ctx.needs_input_grad[0] else None
        dw = dyb.T @ xb if ctx.needs_input_grad[1] else None
        return dx, dw


def linear(x, w, mode, dispatched_x=False, dispatched_dy=False):
    """x [..., K] . w[N, K]^T in the given GEMM mode: 'full' (the tensors' own dtype, fp32 or
    fp64), 'bf16' or 'fp8' (both float32 in and out). The dispatched_* flags (fp8 only, see
    Fp8Linear) are the routed experts'."""
    if mode == "full":
        return x @ w.T
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if mode == "fp8":
        y = Fp8Linear.apply(x2, w, dispatched_x, dispatched_dy)
    else:
        y = Bf16Linear.apply(x2, w)
    return y.reshape(*shape[:-1], w.shape[0])
