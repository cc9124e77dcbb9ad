"""Random but plausible sensitivity tables and cost models, for tests and benchmarks of
the decision strategies (``irc.decision.strategies``) without compiling a model.

    >>> table, cost = random_problem(200, seed=1)

A chain of conv layers of log-uniform size. Local SQNR falls about 6 dB per weight bit
(int8 28–45 dB, int4 10–22 dB below, int2 6–14 dB below that); ``mse`` and
``norm_error`` follow from it; ``output_nsr`` is the local noise times a per-layer gain
to the output; ``omega`` is ``output_nsr`` times log-normal noise (correlated, not equal).
Bytes follow ``irc.report``'s shape (payload plus per-channel scales); latency is MACs
times a per-precision factor (fp16 slower than fp32 on CPUs, int8 ~2× faster, sub-byte
integers slightly slower than int8 for unpacking), with small transitions. A fraction
``disallow`` of the non-fp32 entries is not supported by the "backend". With
``activations``, the table also holds the noise of each layer's input and output rounded
alone, each 10–45% of its int8 ``output_nsr`` (most of an int8 layer's noise is its
activations').
"""

from __future__ import annotations

import numpy as np

from irc.decision.cost import PRECISIONS, CostModel
from irc.decision.table import CANDIDATES, LayerInfo, SensitivityTable

_SPEED = {"fp32": 1.0, "fp16": 1.25, "int8": 0.45, "int4": 0.5, "int2": 0.55}


def random_problem(layers: int, seed: int = 0, disallow: float = 0.1,
                   activations: bool = False):  # fmt: skip
    """(SensitivityTable, CostModel) of a random chain of ``layers`` conv layers."""
    rng = np.random.default_rng(seed)
    n = layers
    channels = rng.choice([16, 32, 64, 128, 256], size=n)
    fan_in = np.exp(rng.uniform(np.log(9), np.log(2304), size=n)).astype(int) + 1
    params = channels * fan_in
    infos = [
        LayerInfo(
            f"layer{i:04d}",
            "conv2d",
            (int(channels[i]), int(fan_in[i])),
            (int(channels[i]), 8, 8),
            int(params[i]) * 64,
        )
        for i in range(n)
    ]

    s8 = rng.uniform(28, 45, n)
    s4 = s8 - rng.uniform(10, 22, n)
    s2 = s4 - rng.uniform(6, 14, n)
    sqnr = np.stack([s8 + rng.uniform(35, 50, n), s8, s4, s2], axis=1)  # CANDIDATES order
    noise = 10.0 ** (-sqnr / 10.0)
    signal = np.exp(rng.uniform(np.log(1e-2), np.log(10.0), n))[:, None]
    gain = np.exp(rng.uniform(np.log(1e-3), np.log(0.3), n))[:, None]
    output_nsr = noise * gain * rng.uniform(0.8, 1.25, noise.shape)
    weight = np.array([0.01, 1.0, 4.0, 9.0])
    metrics = {
        "sqnr": sqnr,
        "mse": noise * signal,
        "sqnr_delta": rng.uniform(0.1, 2.0, (n, 1)) * weight * rng.uniform(0.8, 1.2, (n, 4)),
        "norm_error": np.sqrt(noise * signal) * rng.uniform(0.5, 2.0, (n, 1)),
        "omega": output_nsr * np.exp(rng.normal(0.0, 0.7, noise.shape)),
        "output_nsr": output_nsr,
    }
    sides = None
    if activations:  # its own stream: the same seed gives the same problem either way
        sides = output_nsr[:, 1:2] * np.random.default_rng([seed, 1]).uniform(0.1, 0.45, (n, 2))
    table = SensitivityTable(infos, CANDIDATES, metrics, images=16, activations=sides)

    payload = {
        "fp32": 4 * params,
        "fp16": 2 * params,
        "int8": params,
        "int4": (params + 1) // 2,
        "int2": (params + 3) // 4,
    }
    side = {"fp32": 4 * channels, "fp16": 4 * channels}
    nbytes = np.stack([payload[p] + side.get(p, 12 * channels) for p in PRECISIONS], axis=1)
    base = params * 64 * 2e-10 * rng.uniform(0.7, 1.3, n)
    latency = np.stack([base * _SPEED[p] * rng.uniform(0.9, 1.1, n) for p in PRECISIONS], axis=1)
    allowed = rng.uniform(size=(n, len(PRECISIONS))) >= disallow
    allowed[:, 0] = True
    transition = (channels * 64 * 1e-9)[:, None] * rng.uniform(0.5, 1.5, (n, 2))
    cost = CostModel(
        [x.name for x in infos],
        PRECISIONS,
        latency,
        nbytes.astype(np.int64),
        allowed,
        np.ones_like(allowed),
        transition,
        other_bytes=1000,
        other_latency=1e-5,
        machine="synthetic",
    )
    return table, cost
