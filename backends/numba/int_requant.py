"""Requantizing an int32 product tile into int8 rows, sixteen channels per instruction.

``requantize_tile_simd`` computes what ``int_conv_nhwc.requantize_tile`` computes, bit for
bit, for the channels whose constants allow it (``simd_constants``), and redoes the others
by the int64 path of ``int_common.requantize_one``. Per 16 channels of a row it is a
micro-kernel in LLVM IR (``numba.extending.intrinsic``):

    v = acc + corr                           (int32: no wrap for the allowed channels)
    y = round_half_even(float64(v) · scale)  (``vcvtpd2dq`` with {rn-sae}, 8 lanes twice)
    out = int8(clamp(y + zp, lo, hi))        (int32 max/min, then truncation)

stored with a masked store for the last, partial vector of a row. A channel is allowed when
|corr| + bound < 2^31 (the int32 sum cannot wrap), its float64 path is exact
(``layer_constants``'s ``fast``) and (|corr| + bound)·scale < 2^30 (the conversion and the
zero point's addition cannot overflow int32); then y equals the integer result, as in
``int_common``. The rounding is encoded in the instruction, so it does not depend on the
thread's MXCSR. The kernel needs AVX-512 (``int_simd.HAVE_AVX512``); it is only
compiled where the host has it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types, uint64
from numba.extending import intrinsic

from irc.backends.numba.int_common import requantize_one
from irc.backends.numba.int_simd import HAVE_AVX512, _const, _intrinsic_fn, _load, _loop, _shuffle

LANES = 16  # channels per vector
CONVERT_LIMIT = 2.0**30  # |y| below this: y + zp cannot wrap int32

_I1, _I8, _I32 = ir.IntType(1), ir.IntType(8), ir.IntType(32)
_F64 = ir.DoubleType()
_V16I32, _V8I32 = ir.VectorType(_I32, 16), ir.VectorType(_I32, 8)
_V8F64, _V16I8, _V16I1 = ir.VectorType(_F64, 8), ir.VectorType(_I8, 16), ir.VectorType(_I1, 16)
_ROUND_NEAREST = 8  # _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC


def _splat32(builder, value):
    """A <16 x i32> with every lane the i64 ``value`` truncated to i32."""
    v = builder.insert_element(ir.Constant(_V16I32, None), builder.trunc(value, _I32), _const(0))
    return _shuffle(builder, v, v, [0] * 16)


@intrinsic
def _requant_rows(typingctx, acc, acc_rs, rows, cols, corr, scale, out, out_rs, zp, lo, hi):
    """For r < rows and c < cols: out[r·out_rs + c] (int8) = clamp(rne((acc[r, c] + corr[c])
    · scale[c]) + zp, lo, hi), where acc rows are int32 at byte stride ``acc_rs``, corr is
    int32 and scale float64 (both readable to a multiple of 16 channels); addresses and
    strides in bytes, all i64."""
    sig = types.void(*(types.intp,) * 11)

    def codegen(context, builder, signature, args):
        acc, acc_rs, rows, cols, corr, scale, out, out_rs, zp, lo, hi = args
        convert = _intrinsic_fn(
            builder,
            "llvm.x86.avx512.mask.cvtpd2dq.512",
            _V8I32,
            [_V8F64, _V8I32, _I8, _I32],
        )
        store = _intrinsic_fn(
            builder,
            "llvm.masked.store.v16i8.p0",
            ir.VoidType(),
            [_V16I8, _V16I8.as_pointer(), _I32, _V16I1],
        )
        zp_v, lo_v, hi_v = (_splat32(builder, v) for v in (zp, lo, hi))
        lanes = ir.Constant(_V16I32, list(range(16)))
        vectors = builder.sdiv(builder.add(cols, _const(15)), _const(16))
        all_mask = ir.Constant(_I8, -1)
        rounding = ir.Constant(_I32, _ROUND_NEAREST)
        undef8 = ir.Constant(_V8I32, None)

        def row(r, carried):
            a_row = builder.add(acc, builder.mul(r, acc_rs))
            o_row = builder.add(out, builder.mul(r, out_rs))

            def vector(v, carried):
                at = builder.mul(v, _const(64))
                s = builder.add(
                    _load(builder, a_row, at, _V16I32), _load(builder, corr, at, _V16I32)
                )
                halves = []
                for h in range(2):
                    part = _shuffle(builder, s, s, range(8 * h, 8 * h + 8))
                    f = builder.sitofp(part, _V8F64)
                    at8 = builder.add(builder.mul(v, _const(128)), _const(64 * h))
                    sc = _load(builder, scale, at8, _V8F64)
                    y = builder.fmul(f, sc)
                    halves.append(builder.call(convert, [y, undef8, all_mask, rounding]))
                q = _shuffle(builder, halves[0], halves[1], range(16))
                q = builder.add(q, zp_v)
                q = builder.select(builder.icmp_signed("<", q, lo_v), lo_v, q)
                q = builder.select(builder.icmp_signed(">", q, hi_v), hi_v, q)
                left = _splat32(builder, builder.sub(cols, builder.mul(v, _const(16))))
                mask = builder.icmp_signed("<", lanes, left)
                dest = builder.inttoptr(builder.add(o_row, builder.mul(v, _const(16))),
                                        _V16I8.as_pointer())  # fmt: skip
                builder.call(store, [builder.trunc(q, _V16I8), dest, ir.Constant(_I32, 1), mask])
                return carried

            _loop(builder, vectors, [], vector)
            return carried

        _loop(builder, rows, [], row)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _absent(acc, acc_rs, rows, cols, corr, scale, out, out_rs, zp, lo, hi):
    """Stands in for the kernel on a host without AVX-512 (never called there)."""
    raise RuntimeError("this host has no AVX-512 requantization kernel")


requant_rows = _requant_rows if HAVE_AVX512 else _absent


@njit(cache=True)
def simd_constants(tail, bound):
    """(corr as int32, scale as float64, both padded with zeros to a multiple of 16 channels,
    and per channel whether ``requantize_tile_simd``'s kernel may requantize it) from
    ``layer_constants``' ``tail``; ``bound`` bounds |acc| before corr."""
    corr, corr_f, scale_f, fast = tail[0], tail[3], tail[4], tail[5]
    count = corr.size
    padded = count + LANES  # a tile's vectors from any channel c0 stay inside
    corr32 = np.zeros(padded, dtype=np.int32)
    scale = np.zeros(padded, dtype=np.float64)
    allowed = np.zeros(count, dtype=np.bool_)
    for c in range(count):
        largest = abs(corr_f[c]) + np.float64(bound)
        if fast[c] and largest < 2.0**31 and largest * scale_f[c] < CONVERT_LIMIT:
            allowed[c] = True
            corr32[c] = np.int32(corr[c])
            scale[c] = scale_f[c]
    return corr32, scale, allowed


@njit(cache=True)
def requantize_tile_simd(acc, pitch_acc, rows, cols, tail, simd, c0, zp, lo, hi, of, off, pitch):
    """of[off + p·pitch + o] = requant(acc[p·pitch_acc + o] + corr[c0 + o]) for p < rows,
    o < cols, as ``int_conv_nhwc.requantize_tile``: by the vector kernel, then the channels
    it may not take (``simd_constants``) by the int64 path."""
    corr32, scale, allowed = simd
    requant_rows(acc.ctypes.data, 4 * pitch_acc, rows, cols, corr32.ctypes.data + 4 * c0,
                  scale.ctypes.data + 8 * c0, of.ctypes.data + off, pitch, zp, lo, hi)  # fmt: skip
    corr, mult, shf = tail[0], tail[1], tail[2]
    for o in range(cols):
        c = c0 + o
        if not allowed[c]:
            for p in range(rows):
                v = np.int64(acc[uint64(p * pitch_acc + o)]) + corr[c]
                of[off + p * pitch + o] = np.int8(requantize_one(v, mult[c], shf[c], zp, lo, hi))
