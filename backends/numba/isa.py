"""Which instruction set the integer kernels use on this machine, as one name.

The kernels choose their paths when their modules are imported (``int_simd.HAVE_AVX2``,
``HAVE_AVX512``, ``HAVE_VNNI`` and ``HAVE_AVX_VNNI``: the host's features that Numba's
target has too, less those an ``IRC_DISABLE_*`` variable turns off); every path gives the same
bits. ``kernel_isa`` names the highest one in use, for reports and for cost-model keys
(a latency measured with one path says nothing about another).
"""

from __future__ import annotations

from irc.backends.numba.int_simd import HAVE_AVX2, HAVE_AVX512, HAVE_AVX_VNNI, HAVE_VNNI


def kernel_isa() -> str:
    """'avx512-vnni', 'avx512', 'avx-vnni', 'avx2' or 'portable': the integer kernels'
    instruction set."""
    if HAVE_VNNI:
        return "avx512-vnni"
    if HAVE_AVX512:
        return "avx512"
    if HAVE_AVX_VNNI:
        return "avx-vnni"
    return "avx2" if HAVE_AVX2 else "portable"
