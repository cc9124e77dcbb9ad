"""Single-core peak throughput of the SIMD multiply-accumulate instructions the int8 kernels use.

Each probe is an LLVM IR function built with ``llvmlite.ir`` and compiled by MCJIT for the
host CPU (``llvm.get_host_cpu_name()`` and its feature flags):

    void probe(i64 iters, i64 src, i64 out)

It loads ``CHAINS`` accumulator vectors and two operand vectors ``a``, ``b`` from ``src``,
runs a loop of ``iters`` (a runtime argument) in which every accumulator takes one step of
its own dependency chain, and stores the accumulators to ``out`` at the end, so the loop
can neither be folded nor removed. With many independent chains per iteration the
instruction latency is hidden and the loop runs at the instruction's throughput. The steps:

- ``vpdpbusd 512`` / ``vpdpbusd 256``: acc = vpdpbusd(acc, a, b) (u8 x s8 quads into i32
  lanes: 64 / 32 MACs per instruction);
- ``vpdpwssd 512``: acc = vpdpwssd(acc, a, b) (s16 x s16 pairs: 32 MACs);
- ``vpmaddwd+vpaddd 256`` / ``512``: acc = acc + vpmaddwd(acc as int16 pairs, b) (16 / 32
  MACs per pair of instructions; the madd reads the chain so it cannot be hoisted);
- ``fma f32 512`` / ``fma f32 256``: acc = fma(a, b, acc) (16 / 8 lanes).

GOP/s counts 2 operations per MAC (or per FMA lane). Run ``python bench/peak_probe.py``
for a table; ``peaks()`` returns the numbers, ``run_probe`` / ``reference`` execute a probe
and its numpy model for a given loop count (the unit test compares them).
"""

from __future__ import annotations

import argparse
import ctypes
import re
import time
from dataclasses import dataclass
from functools import cache, lru_cache

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

CHAINS = 24  # independent accumulators per loop iteration (32 vector registers with AVX-512)

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_F32 = ir.FloatType()
_NO_VNNI = ("avxvnni", "avx512vnni")


@dataclass(frozen=True)
class Probe:
    """One instruction to time: its step's IR, what the host needs, the work per step."""

    name: str
    kind: str  # "dot", "madd" or "fma"
    intrinsic: str
    lanes: int  # 32-bit lanes per vector
    src_elem: ir.Type  # element type of a and b in the intrinsic call
    macs: int  # multiply-accumulates (FMA lanes) per step
    requires: tuple[tuple[str, ...], ...]  # any one of these feature sets suffices
    mnemonic: str  # what the loop must contain in the assembly
    disable: tuple[str, ...] = ()  # host features turned off for this probe's code
    chains: int = 0  # independent accumulators (0: ``CHAINS``)

    @property
    def n_chains(self) -> int:
        """Independent accumulator chains in this probe's loop."""
        return self.chains or CHAINS

    @property
    def vector_bytes(self) -> int:
        """Bytes of one accumulator vector."""
        return 4 * self.lanes

    @property
    def ops_per_step(self) -> int:
        """Operations (2 per MAC) done by one step of one chain."""
        return 2 * self.macs


PROBES: dict[str, Probe] = {
    p.name: p
    for p in [
        Probe("vpdpbusd 512", "dot", "llvm.x86.avx512.vpdpbusd.512", 16, _I8, 64,
              (("avx512vnni", "avx512f"),), "vpdpbusd"),
        Probe("vpdpwssd 512", "dot", "llvm.x86.avx512.vpdpwssd.512", 16, _I16, 32,
              (("avx512vnni", "avx512f"),), "vpdpwssd"),
        # VEX-encoded AVX-VNNI (AVX-512 VNNI off): 16 ymm registers, so 12 chains
        Probe("vpdpbusd 256", "dot", "llvm.x86.avx512.vpdpbusd.256", 8, _I8, 32,
              (("avxvnni",),), "{vex}\tvpdpbusd", ("avx512vnni",), 12),
        # LLVM fuses acc + vpmaddwd(x, w) into vpdpwssd where VNNI is on: turn it off
        # plain AVX2 (AVX-512 off): 16 ymm registers, so 12 chains
        Probe("vpmaddwd+vpaddd 256", "madd", "llvm.x86.avx2.pmadd.wd", 8, _I16, 16,
              (("avx2",),), "vpmaddwd", _NO_VNNI + ("avx512f",), 12),
        Probe("vpmaddwd+vpaddd 512", "madd", "llvm.x86.avx512.pmaddw.d.512", 16, _I16, 32,
              (("avx512bw",),), "vpmaddwd", _NO_VNNI),
        Probe("fma f32 512", "fma", "llvm.fma.v16f32", 16, _F32, 16, (("avx512f",),),
              "vfmadd"),
        Probe("fma f32 256", "fma", "llvm.fma.v8f32", 8, _F32, 8, (("fma", "avx"),), "vfmadd"),
    ]
}  # fmt: skip


@lru_cache(maxsize=1)
def host_features() -> dict[str, bool]:
    """LLVM's feature flags of the host CPU (``avx2``, ``avx512vnni``, ``avxvnni``, ...)."""
    return dict(llvm.get_host_cpu_features())


def supported(name: str) -> tuple[bool, str]:
    """Whether the host can run probe ``name``, and if not, the reason."""
    probe, feats = PROBES[name], host_features()
    for need in probe.requires:
        if all(feats.get(f, False) for f in need):
            return True, ""
    wants = " or ".join("+".join(need) for need in probe.requires)
    return False, f"host lacks {wants}"


def _types(probe: Probe) -> tuple[ir.VectorType, ir.VectorType]:
    """The accumulator vector type and the operand vector type of ``probe``'s intrinsic."""
    if probe.kind == "fma":
        vec = ir.VectorType(_F32, probe.lanes)
        return vec, vec
    per_lane = 4 // (probe.src_elem.width // 8)
    return ir.VectorType(_I32, probe.lanes), ir.VectorType(probe.src_elem, per_lane * probe.lanes)


def build_ir(probe: Probe, chains: int | None = None) -> str:
    """LLVM IR text of ``void probe(i64 iters, i64 src, i64 out)`` for ``probe``."""
    chains = chains or probe.n_chains
    acc_t, src_t = _types(probe)
    module = ir.Module(name="peak_probe")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_I64, _I64, _I64]), name="probe")
    iters, src, out = fn.args
    if probe.kind == "dot":
        callee = ir.Function(module, ir.FunctionType(acc_t, [acc_t, src_t, src_t]),
                             name=probe.intrinsic)  # fmt: skip
    elif probe.kind == "madd":
        callee = ir.Function(module, ir.FunctionType(acc_t, [src_t, src_t]), name=probe.intrinsic)
    else:
        callee = ir.Function(module, ir.FunctionType(acc_t, [acc_t] * 3), name=probe.intrinsic)

    entry, loop, done = fn.append_basic_block("entry"), fn.append_basic_block("loop"), None
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    nbytes = probe.vector_bytes

    def at(base, index: int, ty):
        addr = b.add(base, ir.Constant(_I64, index * nbytes))
        return b.inttoptr(addr, ty.as_pointer())

    start = [b.load(at(src, c, acc_t), align=1) for c in range(chains)]
    va = b.load(at(src, chains, src_t), align=1)
    vb = b.load(at(src, chains + 1, src_t), align=1)
    positive = b.icmp_signed(">", iters, ir.Constant(_I64, 0))
    b.cbranch(positive, loop, done)

    b.position_at_end(loop)
    i = b.phi(_I64, name="i")
    accs = [b.phi(acc_t, name=f"acc{c}") for c in range(chains)]
    new = []
    for acc in accs:
        if probe.kind == "dot":
            new.append(b.call(callee, [acc, va, vb]))
        elif probe.kind == "madd":
            new.append(b.add(acc, b.call(callee, [b.bitcast(acc, src_t), vb])))
        else:
            new.append(b.call(callee, [va, vb, acc]))
    i_next = b.add(i, ir.Constant(_I64, 1))
    i.add_incoming(ir.Constant(_I64, 0), entry)
    i.add_incoming(i_next, loop)
    for acc, s, n in zip(accs, start, new):
        acc.add_incoming(s, entry)
        acc.add_incoming(n, loop)
    b.cbranch(b.icmp_signed("<", i_next, iters), loop, done)

    b.position_at_end(done)
    final = [b.phi(acc_t) for _ in range(chains)]
    for f, s, n in zip(final, start, new):
        f.add_incoming(s, entry)
        f.add_incoming(n, loop)
    for c, f in enumerate(final):
        b.store(f, at(out, c, acc_t), align=1)
    b.ret_void()
    return str(module)


@cache
def _target_machine(disable: tuple[str, ...] = ()):
    """An -O3 JIT target machine for the host CPU and its features, minus ``disable``."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    feats = llvm.get_host_cpu_features()
    for name in disable:
        if name in feats:
            feats[name] = False
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=feats.flatten(),
                                        opt=3, jit=True)  # fmt: skip


@dataclass
class Compiled:
    """A compiled probe: the ctypes entry point, its engine (kept alive) and its assembly."""

    probe: Probe
    chains: int
    func: object
    engine: object
    asm: str

    def loop_count(self) -> int:
        """How many times the probe's mnemonic occurs in the assembly (≥ chains if kept)."""
        return len(re.findall(re.escape(self.probe.mnemonic) + r"\w*", self.asm))


@cache
def compile_probe(name: str, chains: int | None = None) -> Compiled:
    """Build, optimise (-O3 pipeline) and JIT-compile probe ``name`` for the host."""
    chains = chains or PROBES[name].n_chains
    ok, why = supported(name)
    if not ok:
        raise RuntimeError(f"{name}: {why}")
    probe = PROBES[name]
    tm = _target_machine(probe.disable)
    mod = llvm.parse_assembly(build_ir(probe, chains))
    mod.triple = tm.triple
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    asm = tm.emit_assembly(mod)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    addr = engine.get_function_address("probe")
    func = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(addr)
    compiled = Compiled(probe, chains, func, engine, asm)
    if compiled.loop_count() < chains:
        raise RuntimeError(f"{name}: the compiled loop lacks {probe.mnemonic} (optimised away?)")
    if "rsp" in asm:
        raise RuntimeError(f"{name}: the accumulators spill to the stack (fewer chains)")
    if probe.kind == "madd" and "vpdpwssd" in asm:
        raise RuntimeError(f"{name}: LLVM fused the madd and add into vpdpwssd")
    return compiled


def operands(name: str, chains: int | None = None, seed: int = 0) -> np.ndarray:
    """Random source bytes for probe ``name``: ``chains`` accumulators, then ``a``, ``b``.

    Integer probes get random bytes; FMA probes small integers scaled by 1/8 so that the
    numpy model's sums stay exact for short loops.
    """
    chains = chains or PROBES[name].n_chains
    probe = PROBES[name]
    rng = np.random.default_rng(seed)
    count = (chains + 2) * probe.lanes
    if probe.kind == "fma":
        vals = rng.integers(-8, 9, count).astype(np.float32) / np.float32(8)
        return vals.view(np.uint8)
    return rng.integers(0, 256, 4 * count, dtype=np.uint8)


def run_probe(name: str, iters: int, src: np.ndarray, chains: int | None = None) -> np.ndarray:
    """Run the compiled probe for ``iters`` loop iterations on ``src`` (see ``operands``);
    returns the final accumulators as [chains, lanes] int32 (or float32 for FMA)."""
    chains = chains or PROBES[name].n_chains
    compiled = compile_probe(name, chains)
    probe = compiled.probe
    src = np.ascontiguousarray(src, dtype=np.uint8)
    if src.size != (chains + 2) * probe.vector_bytes:
        raise ValueError(f"{name}: src must hold {chains + 2} vectors")
    out = np.zeros(chains * probe.vector_bytes, dtype=np.uint8)
    compiled.func(int(iters), src.ctypes.data, out.ctypes.data)
    dtype = np.float32 if probe.kind == "fma" else np.int32
    return out.view(dtype).reshape(chains, probe.lanes)


def _wrap32(v: np.ndarray) -> np.ndarray:
    """int64 values wrapped to int32 (two's complement)."""
    return (((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def reference(name: str, iters: int, src: np.ndarray, chains: int | None = None) -> np.ndarray:
    """numpy model of ``run_probe``: the same chained arithmetic, step by step."""
    chains = chains or PROBES[name].n_chains
    probe = PROBES[name]
    lanes = probe.lanes
    src = np.ascontiguousarray(src, dtype=np.uint8)
    if probe.kind == "fma":
        words = src.view(np.float32)
        acc = words[: chains * lanes].reshape(chains, lanes).copy()
        a, b = words[chains * lanes : (chains + 1) * lanes], words[(chains + 1) * lanes :]
        prod = (a.astype(np.float64) * b.astype(np.float64))[None, :]
        for _ in range(iters):  # fma: one rounding of acc + a·b (exact for the test's values)
            acc = (acc.astype(np.float64) + prod).astype(np.float32)
        return acc
    acc = src[: chains * 4 * lanes].view(np.int32).reshape(chains, lanes).astype(np.int64)
    a_bytes = src[chains * 4 * lanes : (chains + 1) * 4 * lanes]
    b_bytes = src[(chains + 1) * 4 * lanes :]
    if probe.kind == "dot" and probe.src_elem.width == 8:  # u8 (a) x s8 (b), 4 per lane
        prod = a_bytes.astype(np.int64) * b_bytes.view(np.int8).astype(np.int64)
        step = prod.reshape(lanes, 4).sum(axis=1)[None, :]
        for _ in range(iters):
            acc = _wrap32(acc + step).astype(np.int64)
    elif probe.kind == "dot":  # s16 x s16, 2 per lane
        prod = a_bytes.view(np.int16).astype(np.int64) * b_bytes.view(np.int16).astype(np.int64)
        step = prod.reshape(lanes, 2).sum(axis=1)[None, :]
        for _ in range(iters):
            acc = _wrap32(acc + step).astype(np.int64)
    else:  # acc + vpmaddwd(acc as int16 pairs, b)
        bw = b_bytes.view(np.int16).astype(np.int64)
        for _ in range(iters):
            pairs = _wrap32(acc).view(np.int16).astype(np.int64).reshape(chains, lanes, 2)
            madd = _wrap32((pairs * bw.reshape(lanes, 2)[None]).sum(axis=2))
            acc = _wrap32(acc + madd).astype(np.int64)
    return _wrap32(acc)


def measure(name: str, seconds: float = 0.2, chains: int | None = None, repeats: int = 10) -> float:
    """GOP/s of probe ``name`` on one core: the best of ``repeats`` runs of about
    ``seconds / repeats`` each (the loop count calibrated from a short run), timed by the
    calling thread's CPU time, so that time slices lost to other processes on a shared
    machine do not count (the wall time is used where the thread clock is missing)."""
    chains = chains or PROBES[name].n_chains
    compiled = compile_probe(name, chains)
    probe = compiled.probe
    src = operands(name, chains)
    out = np.zeros(chains * probe.vector_bytes, dtype=np.uint8)
    func, s_ptr, o_ptr = compiled.func, src.ctypes.data, out.ctypes.data

    clock = getattr(time, "thread_time", time.perf_counter)

    def timed(n: int) -> float:
        t = clock()
        func(n, s_ptr, o_ptr)
        return clock() - t

    n = 1000
    while True:  # calibrate: grow the loop until one call takes ≥ 1 ms (or the budget)
        elapsed = timed(n)
        if elapsed >= min(1e-3, seconds / (4 * repeats)):
            break
        n *= 4
    n = max(1, int(n * (seconds / repeats) / max(elapsed, 1e-9)))
    timed(n)  # warm up (clock ramp)
    best = min(timed(n) for _ in range(repeats))
    return n * chains * probe.ops_per_step / best / 1e9


def peaks(seconds: float = 0.2) -> dict[str, float]:
    """GOP/s (2 per MAC or FMA lane) of every probe the host supports, by probe name,
    each measured for about ``seconds``; probes the host cannot run are left out."""
    result = {}
    for name in PROBES:
        if supported(name)[0]:
            result[name] = measure(name, seconds)
    return result


def main() -> None:
    """Print the peak table (and the probes skipped, with the reason)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per probe")
    args = parser.parse_args()
    print(f"host CPU (LLVM): {llvm.get_host_cpu_name()}, 1 thread")
    print(f"{'instruction':<22} {'MACs/step':>9} {'chains':>6} {'GOP/s':>9} {'Gsteps/s':>9}")
    for name, probe in PROBES.items():
        ok, why = supported(name)
        if not ok:
            print(f"{name:<22} {probe.macs:>9} {probe.n_chains:>6} {'skipped':>9}  ({why})")
            continue
        gops = measure(name, args.seconds)
        steps = gops / probe.ops_per_step
        print(f"{name:<22} {probe.macs:>9} {probe.n_chains:>6} {gops:>9.1f} {steps:>9.2f}")
    print("a step is one instruction (vpmaddwd+vpaddd: the pair); GOP/s = 2 per MAC")


if __name__ == "__main__":
    main()
