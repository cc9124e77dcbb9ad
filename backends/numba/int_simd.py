"""AVX2 micro-kernels for the exact integer matrix product of ``int_gemm.gemm_s8``.

``gemm_s8_fast(a, w, bits, k, acc)`` computes what ``int_gemm.gemm_s8`` computes, bit for bit
(``acc[m, n] = Σ_k a[m, k] · w[n, k]`` in wrapping int32), with micro-kernels written as
``numba.extending.intrinsic`` functions that emit LLVM IR on 256-bit vector types and call
two x86 instructions LLVM never forms from plain loops:

- ``vpmaddwd`` (``llvm.x86.avx2.pmadd.wd``): 16 int16 × int16 products summed in pairs into 8
  int32 lanes, exact for int8 operands sign-extended to int16.
- ``vpmaddubsw`` (``llvm.x86.avx2.pmadd.ub.sw``): 32 u8 × s8 products summed in pairs into 16
  int16 lanes (saturating), followed by ``vpmaddwd`` with ones to widen to int32.

**Loop structure.** For each panel of output channels (weights ≤ 384 KB, L2 resident) and
chunk of K (scratch ≤ 16 KB, L1 resident), each block of ``TM = 6`` activation rows is
prepared once into a scratch (below), then one kernel call runs all tiles of the panel
along the output channels and writes the int32 totals straight into ``acc`` (adding to
them for later K chunks). A tile accumulates int32 vectors along K and reduces them at the
end with a transpose-and-add tree.

**8-bit weights.** The activation rows are sign-extended to an int16 scratch and read by
``vpmaddwd`` as memory operands; each weight row is loaded 16 bytes at a time and
sign-extended in a register (``vpmovsxbw``). Tile: 6 rows × 2 output channels (12
accumulators), 16 k per step; 1 row × 4 channels for a single row.

**4- and 2-bit weights.** A packed byte holds ``p = 8 / bits`` fields; a 32-byte load of a
row holds ``32 p`` weights. ``(byte ^ 0x88) >> 4s & 0xF`` turns 4-bit field ``s`` into the
unsigned level ``w + 8``; at 2 bits ``(byte ^ 0xAA) >> 2s & 3`` is ``f + 2`` for the field
f of level w = 2f + 1, doubled to ``w + 3``. So the weights feed ``vpmaddubsw`` as its
unsigned operand with no sign fix, and the activations as its signed operand, unchanged.
Then ``Σ_k (w+c)·a = Σ_k w·a + c·Σ_k a``: the kernel subtracts ``c · rowsum(a)`` (``c`` =
8 or 3), computed (``vpsadbw``) while preparing the row. No product can saturate:
``|2·15·128| = 3840`` per int16 lane, so 8 products (4-bit; 21 at 2 bits, ``|2·6·128|``)
add in int16 before one ``vpmaddwd`` widens them (4 weight blocks per group). Field
``s`` of byte ``j`` is weight ``p·j + s``, so the activations are deinterleaved into the
same order while preparing (int8 scratch, s-major inside each block of 32 weight bytes;
the K tail uses 16- and 8-byte blocks, so K pads to 32 only). Tile: 6 rows × 1 channel
(one channel's unpacking shared by 6 rows); 1 row × 4 channels for a single row.

Weights are read in place in the given layout (no unpacked or widened copy). K is padded
with zero activations (masked loads of the last step); a weight row's last step may read up
to 31 bytes past the row end, which is the next row's memory except for the last rows of
the array: those few rows are copied, zero padded, into a small buffer per call (the same
for activation rows). ``IRC_DISABLE_SIMD=1`` makes ``gemm_s8_best`` the portable one.

Only for x86-64 CPUs with AVX2 (``has_avx2()``, checked against Numba's compilation target
too): ``gemm_s8_best`` is this function there and the portable ``int_gemm.gemm_s8``
elsewhere; pick it at bind time. After editing this module, delete
``backends/numba/__pycache__/*int_simd*.nb[ic]`` and the cache files of its callers.
"""

from __future__ import annotations

import os
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from irc.quant import weight_qmax

from .int_gemm import gemm_s8

# ------------------------------------------------------------------ CPU features


def _host_features() -> set[str]:
    """Names of the host CPU's features (LLVM's spelling: 'avx2', 'fma', ...)."""
    try:
        import llvmlite.binding as llvm

        return {name for name, on in llvm.get_host_cpu_features().items() if on}
    except Exception:  # pragma: no cover - llvmlite without host feature detection
        pass
    try:  # pragma: no cover
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()  # pragma: no cover


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def target_has(feature: str) -> bool:
    """True when the host CPU has ``feature`` (LLVM's name: 'avx2', 'avx512bw', ...) and
    Numba compiles for a target that has it too.

    Numba's target is the host unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` say
    otherwise (e.g. ``generic`` for portable caches); then the feature string decides.
    """
    if feature not in _host_features():
        return False
    features = numba_config.CPU_FEATURES
    if features is not None:
        flags = [f.strip() for f in features.split(",")]
        return f"+{feature}" in flags and f"-{feature}" not in flags
    return True


def has_avx2() -> bool:
    """True on an x86-64 host with AVX2 when Numba's target has it too (``target_has``)."""
    return _is_x86_64() and target_has("avx2")


def _enabled(variable: str) -> bool:
    """False when the environment ``variable`` (IRC_DISABLE_...) is set to force a lower path."""
    return os.environ.get(variable, "") in ("", "0")


HAVE_AVX2 = has_avx2() and _enabled("IRC_DISABLE_SIMD")
# 16-lane kernels need AVX-512BW; ``vpdpbusd`` / ``vpdpwssd`` (madd and add in one) VNNI
HAVE_AVX512 = HAVE_AVX2 and target_has("avx512bw") and _enabled("IRC_DISABLE_AVX512")
HAVE_VNNI = HAVE_AVX512 and target_has("avx512vnni") and _enabled("IRC_DISABLE_VNNI")
# ``vpdpbusd`` on 256-bit vectors (VEX-encoded where the host has no AVX-512VL)
HAVE_AVX_VNNI = HAVE_AVX2 and target_has("avxvnni") and _enabled("IRC_DISABLE_VNNI")

# ------------------------------------------------------------------ tiles

TM = 6  # activation rows per register tile (all kernels)
TN8 = 2  # output channels per tile, 8-bit weights
TN8_ROW = 4  # output channels per tile, 8-bit weights, single-row tiles
TNQ_ROW = 4  # output channels per tile, 4/2-bit weights, single-row tiles (else 1)
STEP8 = 16  # k per step, 8-bit weights (one vpmovsxbw)
GROUP = {4: 4, 2: 4}  # 32-byte weight blocks summed in int16 before widening
# OFFSET[bits] is added to a 4/2-bit weight level so that vpmaddubsw reads it unsigned:
# [-8, 7] + 8, and the odd INT2 levels {-3, -1, 1, 3} + 3 (a tuple, so njit code reads it)
OFFSET = (0, 0, 3, 0, 8)
SCRATCH_BYTES = 16384  # activation scratch budget per row block (L1 resident)
PANEL_BYTES = 393216  # weight bytes per panel of output channels (L2 resident)

# ------------------------------------------------------------------ IR helpers

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def _vec(elem, n):
    return ir.VectorType(elem, n)


_V32I8, _V16I8 = _vec(_I8, 32), _vec(_I8, 16)
_V16I16, _V8I32, _V4I64 = _vec(_I16, 16), _vec(_I32, 8), _vec(_I64, 4)


def _splat(ty, value):
    """A vector constant with every lane ``value`` (bytes given as 0..255 are wrapped)."""
    bits = ty.element.width
    value = ((value + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))
    return ir.Constant(ty, [value] * ty.count)


def _const(value):
    return ir.Constant(_I64, value)


def _intrinsic_fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _load(builder, base, offset, ty):
    """Unaligned load of a ``ty`` at byte address ``base + offset`` (i64 values)."""
    ptr = builder.inttoptr(builder.add(base, offset), ty.as_pointer())
    return builder.load(ptr, align=1)


def _store(builder, base, offset, value):
    ptr = builder.inttoptr(builder.add(base, offset), value.type.as_pointer())
    builder.store(value, ptr, align=1)


def _shuffle(builder, x, y, idx):
    return builder.shuffle_vector(x, y, ir.Constant(_vec(_I32, len(idx)), list(idx)))


def _loop(builder, count, carried, body):
    """Emit ``for i in range(count): carried = body(i, carried)``; return the final values.

    ``carried`` is a list of LLVM values; ``body`` must emit straight-line code.
    """
    fn = builder.function
    entry = builder.basic_block
    loop = fn.append_basic_block("simd_loop")
    done = fn.append_basic_block("simd_done")
    builder.cbranch(builder.icmp_signed(">", count, _const(0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(_I64)
    phis = [builder.phi(v.type) for v in carried]
    new = body(i, phis)
    end = builder.basic_block
    nxt = builder.add(i, _const(1))
    i.add_incoming(_const(0), entry)
    i.add_incoming(nxt, end)
    for phi, v0, v1 in zip(phis, carried, new):
        phi.add_incoming(v0, entry)
        phi.add_incoming(v1, end)
    builder.cbranch(builder.icmp_signed("<", nxt, count), loop, done)
    builder.position_at_end(done)
    outs = []
    for v0, v1 in zip(carried, new):
        phi = builder.phi(v0.type)
        phi.add_incoming(v0, entry)
        phi.add_incoming(v1, end)
        outs.append(phi)
    return outs


def _totals(builder, accs):
    """The lane totals of <8 x i32> ``accs``, as <8 x i32> vectors holding the totals of
    accs[8g : 8g + 8] in order (transpose-and-add trees; missing accs count as zeros)."""
    even, odd = (0, 8, 2, 10, 4, 12, 6, 14), (1, 9, 3, 11, 5, 13, 7, 15)
    lo, hi = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)
    zero = ir.Constant(_V8I32, None)
    out = []
    for j in range(0, len(accs), 8):
        vs = list(accs[j : j + 8])
        vs += [zero] * (8 - len(vs))
        pairs = [
            builder.add(_shuffle(builder, x, y, even), _shuffle(builder, x, y, odd))
            for x, y in zip(vs[0::2], vs[1::2])
        ]
        q0, q1 = [
            builder.add(_shuffle(builder, x, y, lo), _shuffle(builder, x, y, hi))
            for x, y in zip(pairs[0::2], pairs[1::2])
        ]
        # q0 = [totals over 128-bit half 0 of v0..v3 | the same over half 1]
        out.append(
            builder.add(
                _shuffle(builder, q0, q1, (0, 1, 2, 3, 8, 9, 10, 11)),
                _shuffle(builder, q0, q1, (4, 5, 6, 7, 12, 13, 14, 15)),
            )
        )
    return out


def _write_totals(builder, accs, tm, tn, dest, corrected):
    """out[r, c] = (old out[r, c] if keep else 0) + total(accs[r·tn + c]) - corr[r].

    ``dest`` = (out, out_stride, corr, keep): int32 output address and row stride in bytes,
    address of tm int32 corrections (read only when ``corrected``), and a flag (i64 values).
    The old values are read only when ``keep`` (a branch: loading them always cost 15 %).
    A row of tn > 1 totals is stored as one <tn x i32>.
    """
    out, out_stride, corr, keep = dest
    groups = _totals(builder, accs)
    values = []  # per row: <tn x i32> or i32
    for r in range(tm):
        g, o = divmod(r * tn, 8)
        if tn == 1:
            v = builder.extract_element(groups[g], ir.Constant(_I32, o))
            if corrected:
                v = builder.sub(v, _load(builder, corr, _const(4 * r), _I32))
        else:
            assert 8 % tn == 0
            v = _shuffle(builder, groups[g], groups[g], range(o, o + tn))
            if corrected:
                fix = _load(builder, corr, _const(4 * r), _I32)
                fix = builder.insert_element(ir.Constant(v.type, None), fix, ir.Constant(_I32, 0))
                v = builder.sub(v, _shuffle(builder, fix, fix, [0] * tn))
        values.append(v)
    rows = [builder.add(out, builder.mul(out_stride, _const(r))) for r in range(tm)]
    with builder.if_else(builder.icmp_signed("!=", keep, _const(0))) as (then, otherwise):
        with then:
            for r in range(tm):
                old = _load(builder, rows[r], _const(0), values[r].type)
                _store(builder, rows[r], _const(0), builder.add(old, values[r]))
        with otherwise:
            for r in range(tm):
                _store(builder, rows[r], _const(0), values[r])


_KERNEL_SIG = types.void(*(types.intp,) * 11)


def _make_kernel(tm, tn, tile_sums):
    """An intrinsic ``(a, a_stride, w, w_stride, tiles, count, tail, out, out_stride, corr,
    keep)`` running ``tiles`` tm × tn tiles one after the other along the output channels.

    Tile t reads weight rows ``w + (t·tn + c)·w_stride`` and scratch activation rows
    ``a + r·a_stride``; ``tile_sums(builder, rows, chans, count, tail)`` emits the K loops
    and returns the tm·tn <8 x i32> accumulators (row-major), whose totals go to
    ``out + r·out_stride + 4·(t·tn + c)`` as ``_write_totals`` says.
    """
    corrected = tile_sums.corrected

    @intrinsic
    def kernel(
        typingctx, a, a_stride, w, w_stride, tiles, count, tail, out, out_stride, corr, keep
    ):
        def codegen(context, builder, signature, args):
            a, a_stride, w, w_stride, tiles, count, tail, out, out_stride, corr, keep = args
            rows = [builder.add(a, builder.mul(a_stride, _const(r))) for r in range(tm)]

            def tile(t, carried):
                first = builder.mul(t, _const(tn))
                chans = [
                    builder.add(w, builder.mul(w_stride, builder.add(first, _const(c))))
                    for c in range(tn)
                ]
                accs = tile_sums(builder, rows, chans, count, tail)
                dest = (builder.add(out, builder.mul(first, _const(4))), out_stride, corr, keep)
                _write_totals(builder, accs, tm, tn, dest, corrected)
                return carried

            _loop(builder, tiles, [], tile)
            return context.get_dummy_value()

        return _KERNEL_SIG, codegen

    return kernel


# ------------------------------------------------------------------ 8-bit kernels
def _sums8(tm, tn):
    """K loop of an 8-bit tile: ``count`` steps of 16 k, int16 activations × int8 weights
    sign-extended in registers, ``vpmaddwd`` into int32."""

    def tile_sums(builder, rows, chans, steps, tail):
        madd = _intrinsic_fn(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [_V16I16, _V16I16])

        def body(i, accs):
            wo = builder.mul(i, _const(STEP8))
            ao = builder.add(wo, wo)
            wv = [builder.sext(_load(builder, ch, wo, _V16I8), _V16I16) for ch in chans]
            accs = list(accs)
            for r in range(tm):
                av = _load(builder, rows[r], ao, _V16I16)
                for c in range(tn):
                    j = r * tn + c
                    accs[j] = builder.add(accs[j], builder.call(madd, [av, wv[c]]))
            return accs

        return _loop(builder, steps, [ir.Constant(_V8I32, None)] * (tm * tn), body)

    tile_sums.corrected = False
    return tile_sums


def _lane_mask(builder, valid, offset, n):
    """<n x i1>: lane i is below ``valid - offset`` (i64 values), i.e. inside the row."""
    left = builder.sub(valid, offset)
    left = builder.select(builder.icmp_signed("<", left, _const(0)), _const(0), left)
    left = builder.select(builder.icmp_signed(">", left, _const(n)), _const(n), left)
    width = _I8 if n < 256 else _I16
    lim = builder.trunc(left, width)
    splat = builder.insert_element(ir.Constant(_vec(width, n), None), lim, ir.Constant(_I32, 0))
    splat = _shuffle(builder, splat, splat, [0] * n)
    return builder.icmp_unsigned("<", ir.Constant(_vec(width, n), list(range(n))), splat)


@intrinsic
def _prep8(typingctx, src, src_stride, rows, dst, dst_stride, valid, steps):
    """For each of ``rows`` rows: dst int16[16·steps] = src int8[i] sign-extended for
    i < valid, else 0 (src may be read up to 16·steps bytes)."""
    sig = types.void(*(types.intp,) * 7)

    def codegen(context, builder, signature, args):
        src, src_stride, rows, dst, dst_stride, valid, steps = args
        whole = builder.sdiv(valid, _const(16))
        whole = builder.select(builder.icmp_signed("<", whole, steps), whole, steps)

        def row(r, carried):
            s_row = builder.add(src, builder.mul(r, src_stride))
            d_row = builder.add(dst, builder.mul(r, dst_stride))

            def body(i, carried, start=None):
                off = builder.mul(i if start is None else builder.add(i, start), _const(16))
                v = _load(builder, s_row, off, _V16I8)
                if start is not None:  # the steps past the last whole one: zero from valid on
                    mask = _lane_mask(builder, valid, off, 16)
                    v = builder.select(mask, v, ir.Constant(_V16I8, None))
                _store(builder, d_row, builder.add(off, off), builder.sext(v, _V16I16))
                return carried

            _loop(builder, whole, [], body)
            _loop(builder, builder.sub(steps, whole), [], lambda i, c: body(i, c, whole))
            return carried

        _loop(builder, rows, [], row)
        return context.get_dummy_value()

    return sig, codegen


# ------------------------------------------------------------------ 4/2-bit kernels
def _field_vectors(builder, x, bits, nbytes):
    """The unsigned levels ``w + OFFSET[bits]`` of packed bytes ``x`` (<nbytes x i8>) as
    <32 x i8> vectors: vector v holds the fields of 32 / nbytes consecutive s (s-major)."""
    fields = _flipped_fields(builder, x, bits, nbytes)
    if bits == 2:  # f + 2 → 2f + 4 = w + 3
        fields = [builder.add(f, f) for f in fields]
    return fields


def _flipped_fields(builder, x, bits, nbytes):
    """The b-bit fields of packed bytes ``x`` plus 2^(b-1) (sign bit flipped), unsigned."""
    per_byte = 8 // bits
    flip = 0x88 if bits == 4 else 0xAA
    mask = _splat(_V32I8, (1 << bits) - 1)
    x = builder.xor(x, _splat(x.type, flip))
    out = []
    if nbytes == 32:
        words = builder.bitcast(x, _V16I16)
        for s in range(per_byte):
            f = x
            if s:
                f = builder.bitcast(builder.lshr(words, _splat(_V16I16, bits * s)), _V32I8)
            out.append(builder.and_(f, mask))
        return out
    per_vec = 32 // nbytes  # fields per vector: 2 (16 bytes) or 4 (8 bytes)
    if nbytes == 16:
        q = builder.bitcast(x, _vec(_I64, 2))
        q = _shuffle(builder, q, q, (0, 1, 0, 1))
    else:
        q = builder.bitcast(x, _I64)
        q = builder.insert_element(ir.Constant(_V4I64, None), q, ir.Constant(_I32, 0))
        q = _shuffle(builder, q, q, (0, 0, 0, 0))
    qwords_per_field = 4 // per_vec
    for v in range(per_byte // per_vec):
        shifts = [bits * (v * per_vec + j // qwords_per_field) for j in range(4)]
        f = builder.lshr(q, ir.Constant(_V4I64, shifts))
        out.append(builder.and_(builder.bitcast(f, _V32I8), mask))
    return out


def _sumsq(bits, tm, tn):
    """K loop of a 4/2-bit tile: ``count`` 32-byte weight blocks, then ``tail`` bit 1 / 2:
    one 16- / 8-byte block. Unsigned levels (w + 2^(bits-1)) × int8 activations by
    ``vpmaddubsw``, summed in int16 over up to GROUP blocks, widened by ``vpmaddwd``."""
    per_byte = 8 // bits
    group = GROUP[bits]
    # vpmaddubsw results one int16 lane can sum: |2 · (largest unsigned level) · 128| each
    limit = 32767 // (2 * (weight_qmax(bits) + OFFSET[bits]) * 128)
    assert group * per_byte <= limit and (group - 1) * per_byte + per_byte // 2 + 1 <= limit

    def tile_sums(builder, rows, chans, blocks, tail):
        maddubs = _intrinsic_fn(builder, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [_V32I8, _V32I8])
        madd = _intrinsic_fn(builder, "llvm.x86.avx2.pmadd.wd", _V8I32, [_V16I16, _V16I16])
        ones = _splat(_V16I16, 1)

        def add_block(sums, wo, nbytes):
            """sums (int16) += the products of one block at weight byte offset ``wo``."""
            ao = builder.mul(wo, _const(per_byte))
            sums = list(sums)
            for c in range(tn):
                fields = _field_vectors(
                    builder, _load(builder, chans[c], wo, _vec(_I8, nbytes)), bits, nbytes
                )
                for r in range(tm):
                    j = r * tn + c
                    for v, f in enumerate(fields):
                        av = _load(builder, rows[r], builder.add(ao, _const(32 * v)), _V32I8)
                        p = builder.call(maddubs, [f, av])
                        sums[j] = p if sums[j] is None else builder.add(sums[j], p)
            return sums

        def widen(accs, sums):
            return [builder.add(acc, builder.call(madd, [s, ones])) for acc, s in zip(accs, sums)]

        def main_body(i, accs):
            sums = [None] * (tm * tn)
            for g in range(group):
                blk = builder.add(builder.mul(i, _const(group)), _const(g))
                sums = add_block(sums, builder.mul(blk, _const(32)), 32)
            return widen(accs, sums)

        mains = builder.udiv(blocks, _const(group))
        accs = _loop(builder, mains, [ir.Constant(_V8I32, None)] * (tm * tn), main_body)
        # the rest (< group blocks, then the tail) in one more int16 group
        first = builder.mul(mains, _const(group))

        def rest_body(i, sums):
            return add_block(sums, builder.mul(builder.add(first, i), _const(32)), 32)

        sums = [ir.Constant(_V16I16, None)] * (tm * tn)
        sums = _loop(builder, builder.urem(blocks, _const(group)), sums, rest_body)
        wo = builder.mul(blocks, _const(32))
        for bit, nbytes in ((1, 16), (2, 8)):
            if nbytes * per_byte < 32:
                continue
            has = builder.and_(builder.lshr(tail, _const(bit - 1)), _const(1))
            sums = _loop(
                builder,
                has,
                sums,
                lambda i, sums, wo=wo, nbytes=nbytes: add_block(sums, wo, nbytes),
            )
            wo = builder.add(wo, builder.mul(has, _const(nbytes)))
        return widen(accs, sums)

    tile_sums.corrected = True
    return tile_sums


def _make_prepq(bits):
    """Intrinsic ``(src, src_stride, rows, dst, dst_stride, valid, blocks, tail, corr,
    offset)``: for each of ``rows`` rows, the activations of ``blocks`` 32-byte weight
    blocks and the ``tail`` blocks (as in ``_sumsq``) from ``src`` to ``dst`` in field order
    (dst[s·n + j] = src[p·j + s] within a block of n weight bytes), zero from element
    ``valid`` on (``src`` may be read to the block end); and int32 corr[r] =
    offset · Σ_k src[k], the correction of that row's products with weights w + offset."""
    per_byte = 8 // bits
    size = 32 * per_byte  # activation bytes of a whole block

    def copy_block(builder, src, dst, off, valid, nbytes, total, masked=True):
        size = nbytes * per_byte
        psad = _intrinsic_fn(builder, "llvm.x86.avx2.psad.bw", _V4I64, [_V32I8, _V32I8])
        v = _load(builder, src, off, _vec(_I8, size))
        if masked:
            mask = _lane_mask(builder, valid, off, size)
            v = builder.select(mask, v, ir.Constant(v.type, None))
        order = [per_byte * j + s for s in range(per_byte) for j in range(nbytes)]
        d = _shuffle(builder, v, v, order)
        _store(builder, dst, off, d)
        flip, zero = _splat(_V32I8, 0x80), ir.Constant(_V32I8, None)
        for h in range(size // 32):
            part = _shuffle(builder, d, d, range(32 * h, 32 * h + 32))
            total = builder.add(total, builder.call(psad, [builder.xor(part, flip), zero]))
        return total

    def copy_row(builder, src, dst, valid, blocks, whole, tail):
        """Returns Σ (dst + 128) over the row and the bytes written."""

        def body(i, carried, start=None):
            off = builder.mul(i if start is None else builder.add(i, start), _const(size))
            return [copy_block(builder, src, dst, off, valid, 32, carried[0], start is not None)]

        total = _loop(builder, whole, [ir.Constant(_V4I64, None)], body)
        total = _loop(builder, builder.sub(blocks, whole), total, lambda i, c: body(i, c, whole))
        off = builder.mul(blocks, _const(size))
        for bit, nbytes in ((1, 16), (2, 8)):
            if nbytes * per_byte < 32:
                continue
            has = builder.and_(builder.lshr(tail, _const(bit - 1)), _const(1))
            total = _loop(
                builder,
                has,
                total,
                lambda i, t, off=off, nbytes=nbytes: [
                    copy_block(builder, src, dst, off, valid, nbytes, t[0])
                ],
            )
            off = builder.add(off, builder.mul(has, _const(nbytes * per_byte)))
        reduce_add = _intrinsic_fn(builder, "llvm.vector.reduce.add.v4i64", _I64, [_V4I64])
        return builder.call(reduce_add, [total[0]]), off

    @intrinsic
    def prepq(typingctx, src, src_stride, rows, dst, dst_stride, valid, blocks, tail, corr, offset):
        sig = types.void(*(types.intp,) * 10)

        def codegen(context, builder, signature, args):
            src, src_stride, rows, dst, dst_stride, valid, blocks, tail, corr, offset = args
            whole = builder.sdiv(valid, _const(size))
            whole = builder.select(builder.icmp_signed("<", whole, blocks), whole, blocks)

            def row(r, carried):
                s_row = builder.add(src, builder.mul(r, src_stride))
                d_row = builder.add(dst, builder.mul(r, dst_stride))
                total, written = copy_row(builder, s_row, d_row, valid, blocks, whole, tail)
                fix = builder.mul(offset, builder.sub(total, builder.mul(written, _const(128))))
                _store(builder, corr, builder.mul(r, _const(4)), builder.trunc(fix, _I32))
                return carried

            _loop(builder, rows, [], row)
            return context.get_dummy_value()

        return sig, codegen

    return prepq


# Kernels are module-level intrinsics (so callers cache with cache=True), one per tile shape.
TMS = range(1, TM + 1)
_k8_1_1, _k8_2_1, _k8_3_1, _k8_4_1, _k8_5_1, _k8_6_1 = [
    _make_kernel(m, 1, _sums8(m, 1)) for m in TMS
]
_k8_1_2, _k8_2_2, _k8_3_2, _k8_4_2, _k8_5_2, _k8_6_2 = [
    _make_kernel(m, 2, _sums8(m, 2)) for m in TMS
]
_k8_1_4 = _make_kernel(1, TN8_ROW, _sums8(1, TN8_ROW))
_k4_1, _k4_2, _k4_3, _k4_4, _k4_5, _k4_6 = [_make_kernel(m, 1, _sumsq(4, m, 1)) for m in TMS]
_k2_1, _k2_2, _k2_3, _k2_4, _k2_5, _k2_6 = [_make_kernel(m, 1, _sumsq(2, m, 1)) for m in TMS]
_k4_1_4 = _make_kernel(1, TNQ_ROW, _sumsq(4, 1, TNQ_ROW))
_k2_1_4 = _make_kernel(1, TNQ_ROW, _sumsq(2, 1, TNQ_ROW))
_prep4, _prep2 = _make_prepq(4), _make_prepq(2)
assert TM == 6 and TN8 == 2


@njit(cache=True)
def _run8(tm, tn, a, a_rs, w, w_rs, tiles, steps, out, o_rs, keep):
    """``tiles`` tm × tn tiles of 8-bit weights (tn = 1, 2 or 4)."""
    if tn == 4:
        _k8_1_4(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
    elif tn == 2:
        if tm == 6:
            _k8_6_2(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 5:
            _k8_5_2(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 4:
            _k8_4_2(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 3:
            _k8_3_2(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 2:
            _k8_2_2(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        else:
            _k8_1_2(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
    else:
        if tm == 6:
            _k8_6_1(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 5:
            _k8_5_1(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 4:
            _k8_4_1(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 3:
            _k8_3_1(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        elif tm == 2:
            _k8_2_1(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)
        else:
            _k8_1_1(a, a_rs, w, w_rs, tiles, steps, 0, out, o_rs, 0, keep)


@njit(cache=True)
def _channels8(tm, a, a_rs, w, w_rs, count, steps, out, o_rs, keep):
    """``count`` output channels from weight row ``w`` on, widest tiles first."""
    tn = TN8_ROW if tm == 1 else TN8
    full = count // tn
    if full:
        _run8(tm, tn, a, a_rs, w, w_rs, full, steps, out, o_rs, keep)
    left = count - full * tn
    if left:
        _run8(
            tm, 1, a, a_rs, w + full * tn * w_rs, w_rs, left, steps, out + 4 * full * tn, o_rs, keep
        )


@njit(cache=True)
def _channelsq(bits, tm, a, a_rs, w, w_rs, count, blocks, tail, out, o_rs, corr, keep):
    """``count`` output channels of 4/2-bit weights from row ``w`` on: tm × 1 tiles, or
    1 × TNQ_ROW tiles first for a single row."""
    if tm == 1:
        full = count // TNQ_ROW
        if full:
            if bits == 4:
                _k4_1_4(a, a_rs, w, w_rs, full, blocks, tail, out, o_rs, corr, keep)
            else:
                _k2_1_4(a, a_rs, w, w_rs, full, blocks, tail, out, o_rs, corr, keep)
        w += full * TNQ_ROW * w_rs
        out += 4 * full * TNQ_ROW
        count -= full * TNQ_ROW
    if count:
        _runq(bits, tm, a, a_rs, w, w_rs, count, blocks, tail, out, o_rs, corr, keep)


@njit(cache=True)
def _runq(bits, tm, a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep):
    """``tiles`` tm × 1 tiles of 4/2-bit weights."""
    if bits == 4:
        if tm == 6:
            _k4_6(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 5:
            _k4_5(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 4:
            _k4_4(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 3:
            _k4_3(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 2:
            _k4_2(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        else:
            _k4_1(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
    else:
        if tm == 6:
            _k2_6(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 5:
            _k2_5(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 4:
            _k2_4(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 3:
            _k2_3(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        elif tm == 2:
            _k2_2(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)
        else:
            _k2_1(a, a_rs, w, w_rs, tiles, blocks, tail, out, o_rs, corr, keep)


@intrinsic
def _is_int32_array(typingctx, arr):
    """True (a compile-time constant) when ``arr`` is an int32 array."""
    answer = isinstance(arr, types.Array) and arr.dtype == types.int32

    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(1), int(answer))

    return types.boolean(arr), codegen


@njit(cache=True)
def _safe_rows(x, read_end):
    """How many leading rows of ``x`` (bytes) may be read ``read_end`` bytes from their start
    without leaving the array's memory."""
    rows, rb, rs = x.shape[0], x.shape[1] * x.itemsize, x.strides[0]
    if read_end <= rb:
        return rows
    if rows == 1:
        return 0
    safe = ((rows - 1) * rs + rb - read_end) // rs + 1
    return min(rows, max(0, safe))


@njit(cache=True)
def _padded_tail_rows(w, safe, width):
    """The rows ``safe..`` of ``w`` copied into a zero-padded uint8 [rows - safe, width]."""
    pad = np.zeros((w.shape[0] - safe, width), np.uint8)
    for n in range(safe, w.shape[0]):
        for i in range(w.shape[1]):
            pad[n - safe, i] = np.uint8(w[n, i] & 0xFF)
    return pad


@njit(cache=True)
def _row_sources(a, m0, tm, c0, c1, safe_a, tmp):
    """Where rows m0..m0+tm of a[:, c0:c1] are read from, padded to the kernels' step: the
    array itself (rows readable past c1 without leaving its memory), else copies in ``tmp``
    [TM, ≥ c1 - c0]. Returns (address, row stride)."""
    if m0 + tm <= safe_a:
        return a.ctypes.data + m0 * a.strides[0] + c0, a.strides[0]
    for r in range(tm):
        for i in range(c1 - c0):
            tmp[r, i] = a[m0 + r, c0 + i]
    return tmp.ctypes.data, tmp.strides[0]


@njit(cache=True)
def _regions(n0, n1, safe, w_base, w_rs, p_base, p_rs, byte0):
    """Output channels n0..n1 as (lo, hi, address of row lo at byte ``byte0``, row stride):
    the rows read in place (below ``safe``), then the rows read from the padded copy."""
    lo, hi = max(n0, safe), max(n1, safe)
    return (
        (n0, min(n1, safe), w_base + n0 * w_rs + byte0, w_rs),
        (lo, hi, p_base + (lo - safe) * p_rs + byte0, p_rs),
    )


@njit(cache=True)
def _gemm8(a, w, k, acc):
    """gemm_s8_fast for int8 weights (layouts already checked)."""
    rows, cols = a.shape[0], w.shape[0]
    kp = (k + STEP8 - 1) // STEP8 * STEP8
    kc = min(kp, max(STEP8, SCRATCH_BYTES // (2 * TM) // STEP8 * STEP8))
    panel = max(TN8, PANEL_BYTES // kc // TN8 * TN8)
    safe = _safe_rows(w, kp)
    pad = _padded_tail_rows(w, safe, kp)
    safe_a = _safe_rows(a, kp)
    scratch = np.zeros((TM, kc), np.int16)
    tmp = np.zeros((TM, kc), np.int8)
    w_base, w_rs = w.ctypes.data, w.strides[0]
    s_base, s_rs = scratch.ctypes.data, scratch.strides[0]
    p_base, p_rs = pad.ctypes.data, pad.strides[0]
    o_base, o_rs = acc.ctypes.data, acc.strides[0]
    for n0 in range(0, cols, panel):
        n1 = min(cols, n0 + panel)
        for c0 in range(0, k, kc):
            c1 = min(k, c0 + kc)
            keep = 1 if c0 > 0 else 0
            steps = (c1 - c0 + STEP8 - 1) // STEP8
            for m0 in range(0, rows, TM):
                tm = min(TM, rows - m0)
                src, src_rs = _row_sources(a, m0, tm, c0, c1, safe_a, tmp)
                _prep8(src, src_rs, tm, s_base, s_rs, c1 - c0, steps)
                out = o_base + m0 * o_rs
                for lo, hi, wp, ws in _regions(n0, n1, safe, w_base, w_rs, p_base, p_rs, c0):
                    if hi > lo:
                        _channels8(
                            tm, s_base, s_rs, wp, ws, hi - lo, steps, out + 4 * lo, o_rs, keep
                        )


@njit(cache=True)
def _gemm_packed(a, w, bits, k, acc):
    """gemm_s8_fast for packed 4/2-bit weights (layouts already checked)."""
    rows, cols = a.shape[0], w.shape[0]
    per_byte = 8 // bits
    block = 32 * per_byte  # k per 32-byte weight block
    kp = (k + 31) // 32 * 32
    kc = min(kp, max(128, SCRATCH_BYTES // TM // 128 * 128))
    panel = max(1, PANEL_BYTES // (kc // per_byte))
    safe = _safe_rows(w, kp // per_byte)
    pad = _padded_tail_rows(w, safe, kp // per_byte)
    safe_a = _safe_rows(a, kp)
    scratch = np.zeros((TM, kc), np.int8)
    tmp = np.zeros((TM, kc), np.int8)
    corr = np.zeros(TM, np.int32)
    offset = OFFSET[bits]  # the kernels' weights are w + offset
    w_base, w_rs = w.ctypes.data, w.strides[0]
    s_base, s_rs = scratch.ctypes.data, scratch.strides[0]
    p_base, p_rs = pad.ctypes.data, pad.strides[0]
    o_base, o_rs, c_base = acc.ctypes.data, acc.strides[0], corr.ctypes.data
    for n0 in range(0, cols, panel):
        n1 = min(cols, n0 + panel)
        for c0 in range(0, k, kc):
            c1 = min(k, c0 + kc)
            keep = 1 if c0 > 0 else 0
            span = (c1 - c0 + 31) // 32 * 32
            blocks = span // block
            rest = span - blocks * block  # 0, 32, 64 or 96 k
            tail = (1 if rest >= 16 * per_byte else 0) + (2 if rest % 64 == 32 and bits == 2 else 0)
            for m0 in range(0, rows, TM):
                tm = min(TM, rows - m0)
                src, src_rs = _row_sources(a, m0, tm, c0, c1, safe_a, tmp)
                if bits == 4:
                    _prep4(src, src_rs, tm, s_base, s_rs, c1 - c0, blocks, tail, c_base, offset)
                else:
                    _prep2(src, src_rs, tm, s_base, s_rs, c1 - c0, blocks, tail, c_base, offset)
                out = o_base + m0 * o_rs
                byte0 = c0 // per_byte
                for lo, hi, wp, ws in _regions(n0, n1, safe, w_base, w_rs, p_base, p_rs, byte0):
                    if hi > lo:
                        count, at = hi - lo, out + 4 * lo
                        _channelsq(
                            bits,
                            tm,
                            s_base,
                            s_rs,
                            wp,
                            ws,
                            count,
                            blocks,
                            tail,
                            at,
                            o_rs,
                            c_base,
                            keep,
                        )


@njit(cache=True)
def gemm_s8_fast(a, w, bits, k, acc):
    """acc[m, n] = Σ_k a[m, k] · level(w, n, k), as ``int_gemm.gemm_s8``, on AVX2 kernels.

    Same arguments and results (bit for bit, int32 wrapping) as ``int_gemm.gemm_s8``: int8
    ``a`` [M, ≥k], weights int8 [N, ≥k] (``bits`` 8) or packed uint8
    [N, ≥ceil(k·bits/8)] (4, 2), int32 ``acc`` [≥M, ≥N]. Rows of ``a``, ``w`` and ``acc``
    must have unit element stride and non-overlapping forward row strides; other layouts
    take the portable path. Compiles only on AVX2 targets: call it through
    ``gemm_s8_best`` or after checking ``HAVE_AVX2``.
    """
    rows, cols = a.shape[0], w.shape[0]
    if rows == 0 or cols == 0:
        return
    if k <= 0:
        for m in range(rows):
            for n in range(cols):
                acc[m, n] = 0
        return
    if (
        not _is_int32_array(acc)
        or a.itemsize != 1
        or w.itemsize != 1
        or a.strides[1] != 1
        or w.strides[1] != 1
        or acc.strides[1] != 4
        or (rows > 1 and a.strides[0] < a.shape[1])
        or (cols > 1 and w.strides[0] < w.shape[1])
    ):
        gemm_s8(a, w, bits, k, acc)
        return
    if bits == 8:
        _gemm8(a, w, k, acc)
    else:
        _gemm_packed(a, w, bits, k, acc)


gemm_s8_best = gemm_s8_fast if HAVE_AVX2 else gemm_s8
"""The integer product to bind: ``gemm_s8_fast`` on AVX2 targets, else ``gemm_s8``."""
