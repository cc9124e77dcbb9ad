"""Filling the quad kernel's activation rows: byte runs copied as x ^ 0x80, 64 at a time.

The ``vpdpbusd`` product of ``int_conv_nhwc`` reads activations as unsigned bytes
u = x + 128 = x ^ 0x80, in rows of its scratch. ``flip_copy`` and ``fill_bytes`` are LLVM IR
micro-kernels (``numba.extending.intrinsic``) that write a run of n bytes with masked
64-byte loads and stores (AVX-512BW ``vmovdqu8`` with a lane mask), so a run of 9 bytes (a
3×3 stem's kernel row of 3 channels) costs a few instructions rather than a byte loop,
and no byte outside the run is read or written. ``flip_rows`` and ``gather_quads`` fill a
tile's rows for a pointwise and a general convolution. They need AVX-512BW
(``int_simd.HAVE_AVX512``, which the quad kernel implies) and are only compiled there.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from irc.backends.numba.int_simd import HAVE_AVX512, _const, _intrinsic_fn, _loop

_I1, _I8, _I32 = ir.IntType(1), ir.IntType(8), ir.IntType(32)
_V64I8, _V64I1 = ir.VectorType(_I8, 64), ir.VectorType(_I1, 64)


def _make_run(flip: bool):
    """An intrinsic ``(src_or_value, dst, n)``: dst[t] = src[t] ^ 0x80 (``flip``) or the
    byte ``value`` for t < n, by 64-byte masked vectors (i64 addresses)."""

    @intrinsic
    def run(typingctx, source, dst, n):
        sig = types.void(types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            source, dst, n = args
            load = _intrinsic_fn(builder, "llvm.masked.load.v64i8.p0", _V64I8,
                                 [_V64I8.as_pointer(), _I32, _V64I1, _V64I8])  # fmt: skip
            store = _intrinsic_fn(builder, "llvm.masked.store.v64i8.p0", ir.VoidType(),
                                  [_V64I8, _V64I8.as_pointer(), _I32, _V64I1])  # fmt: skip
            zero = ir.Constant(_V64I8, None)
            if not flip:
                byte = builder.trunc(source, _I8)
                splat = builder.insert_element(zero, byte, ir.Constant(_I32, 0))
                value = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(_I32, 64),
                                                                          [0] * 64))  # fmt: skip
            chunks = builder.sdiv(builder.add(n, _const(63)), _const(64))

            def chunk(c, carried):
                off = builder.mul(c, _const(64))
                left = builder.sub(n, off)  # >= 1; a 64-bit lane mask of min(left, 64) ones
                full = builder.icmp_signed(">=", left, _const(64))
                ones = builder.sub(builder.shl(_const(1), left), _const(1))
                bits = builder.select(full, _const(-1), ones)
                mask = builder.bitcast(bits, _V64I1)
                if flip:
                    at = builder.inttoptr(builder.add(source, off), _V64I8.as_pointer())
                    v = builder.call(load, [at, ir.Constant(_I32, 1), mask, zero])
                    v = builder.xor(v, ir.Constant(_V64I8, [-128] * 64))
                else:
                    v = value
                to = builder.inttoptr(builder.add(dst, off), _V64I8.as_pointer())
                builder.call(store, [v, to, ir.Constant(_I32, 1), mask])
                return carried

            _loop(builder, chunks, [], chunk)
            return context.get_dummy_value()

        return sig, codegen

    return run


@njit(cache=True)
def _absent(source, dst, n):
    """Stands in for a run kernel on a host without AVX-512BW (never called there)."""
    raise RuntimeError("this host has no AVX-512BW row kernels")


if HAVE_AVX512:
    flip_copy, fill_bytes = _make_run(True), _make_run(False)
else:  # pragma: no cover - hosts without AVX-512BW
    flip_copy = fill_bytes = _absent


@njit(cache=True)
def flip_rows(xf, x_off, cin, cin_g, rows, xs, row_len):
    """xs[p, c] = x row (x_off + p·cin)[c] ^ 0x80 for p < rows, c < cin_g: a pointwise
    tile's rows into the u8 scratch ``xs`` (rows of ``row_len`` bytes; the rest of each
    row is left as it is)."""
    src, dst = xf.ctypes.data + x_off, xs.ctypes.data
    for p in range(rows):
        flip_copy(src + p * cin, dst + p * row_len, cin_g)


@njit(cache=True)
def gather_quads(xf, img_off, height, width, cin, cin_g, kh, kw, sh, sw, top, left, dh, dw, ow,
                 p0, rows, x_zero, xs, row_len):  # fmt: skip
    """xs[p, (i·kw + j)·cin_g + c] = x[r·sh - top + i·dh, q·sw - left + j·dw, c] ^ 0x80 for
    output pixel p0 + p = (r, q), or (x_zero + 128) in the padding: a general
    convolution's tile into the u8 scratch (rows of ``row_len`` bytes). A kernel row
    whose taps all lie inside the image is one run of kw·cin bytes when the group has
    every channel and dw = 1 (the run is (j, c)-ordered in NHWC)."""
    pad = (x_zero + 128) & 255
    run = cin_g == cin and dw == 1
    span = (kw - 1) * dw
    base, out = xf.ctypes.data, xs.ctypes.data
    r, q = p0 // ow, p0 % ow
    for p in range(rows):
        dst = out + p * row_len
        iw0 = q * sw - left
        for i in range(kh):
            ih = r * sh - top + i * dh
            d0 = dst + i * kw * cin_g
            if ih < 0 or ih >= height:
                fill_bytes(pad, d0, kw * cin_g)
                continue
            row = base + img_off + ih * width * cin
            if run and iw0 >= 0 and iw0 + span < width:
                flip_copy(row + iw0 * cin, d0, kw * cin)
                continue
            for j in range(kw):
                iw = iw0 + j * dw
                if iw < 0 or iw >= width:
                    fill_bytes(pad, d0 + j * cin_g, cin_g)
                else:
                    flip_copy(row + iw * cin, d0 + j * cin_g, cin_g)
        q += 1
        if q == ow:
            q, r = 0, r + 1
