"""Calibration data in every form a user has it, as checked batches the graph can run.

``data`` may be

- a numpy array ``[N, ...]`` for a one-input model (split into ``batch_size`` batches),
- a mapping input name → array ``[N, ...]`` (split likewise),
- an iterable of batches: arrays, tuples of arrays (input order) or dicts by input name,
- a folder of images (``str`` or ``Path``), or an ``ImageSet`` (part of one), with a
  ``preprocess`` spec (``images.py``; a preset named alone takes the model's input size,
  ``fit_preprocess``).

Every batch is checked against the graph's inputs (rank, static dims, float dtype, finite
values) and errors name the argument and the input. float64 (or float16) data are cast to
the model's float32 in a copy; the user's arrays are never written. When a graph input has
a static batch dimension ``B`` (say 1), batches are re-cut into pieces of exactly ``B``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from irc.calibration.images import (
    Preprocess,
    image_files,
    is_image_source,
    is_labelled,
    iter_image_batches,
    load_labelled_folder,
    resolve_preprocess,
)
from irc.errors import InputError
from irc.ir import Graph

Batch = dict[str, np.ndarray]


@dataclass
class BatchSource:
    """Checked batches (input name → array) and the number of samples, when known."""

    batches: Iterator[Batch]
    total: int | None


def model_batches(
    graph: Graph,
    data,
    *,
    batch_size: int = 32,
    preprocess=None,
    limit: int | None = None,
) -> BatchSource:
    """``data`` (any form above) as checked batches for ``graph``, at most ``limit`` samples.

    Batches are re-cut to a static batch dimension where the graph has one.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive int or None, got {limit!r}")
    if not graph.inputs:
        raise InputError("the graph has no inputs to calibrate")
    names = [v.name for v in graph.inputs]

    if is_image_source(data):
        files = image_files(data, limit)
        raw = iter_image_batches(files, fit_preprocess(graph, preprocess), batch_size)
        total = len(files)
    else:
        if preprocess is not None:
            raise InputError("preprocess applies only when data is a folder of images")
        if isinstance(data, np.ndarray) or isinstance(data, Mapping):
            whole = _as_inputs(graph, data, "data")
            n = _leading(whole, "data")
            if n == 0:
                raise InputError("data: the calibration set is empty (0 samples)")
            total = n if limit is None else min(n, limit)
            raw = (
                {k: a[i : i + batch_size] for k, a in whole.items()}
                for i in range(0, total, batch_size)
            )
        elif isinstance(data, Iterable) and not isinstance(data, (bytes, str)):
            raw = iter(data)
            total = _known_length(data, batch_size, limit)
        else:
            raise InputError(
                "data must be a numpy array [N, ...], a dict of arrays, an iterable of "
                f"batches or a folder of images, got {type(data).__name__}"
            )
    checked = _checked(graph, raw, limit)
    static = _static_batch(graph)
    batches = checked if static is None else _recut(checked, static, names)
    return BatchSource(batches, total)


def sample_inputs(
    graph: Graph, data, preprocess, limit: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``limit`` inputs of ``data`` (as for ``model_batches``) as one float32
    array for the graph's first input, and their labels if ``data`` is a folder with a
    ``labels.txt`` (or is a labelled ``ImageSet``)."""
    if is_labelled(data):
        xs, ys = zip(*load_labelled_folder(data, fit_preprocess(graph, preprocess), limit=limit))
        return np.concatenate(xs), np.concatenate(ys)
    source = model_batches(graph, data, preprocess=preprocess, limit=limit)
    name = graph.inputs[0].name
    arrays = [batch[name] for batch in source.batches]
    return np.concatenate(arrays).astype(np.float32), None


def fit_preprocess(graph: Graph, preprocess):
    """``preprocess`` resolved for ``graph``'s images (``resolve_preprocess``): a preset
    named alone takes the side of the first input when it is static and square in the
    preset's layout; None stays None (no folder, no preprocessing)."""
    if preprocess is None:
        return None
    return resolve_preprocess(preprocess, image_side(graph, resolve_preprocess(preprocess)))


def image_side(graph: Graph, preprocess: Preprocess) -> int | None:
    """The side of the square images ``graph``'s first input takes, laid out as
    ``preprocess`` lays them out; None unless it is a rank-4 static square with 3 channels."""
    if not graph.inputs or graph.inputs[0].type.rank != 4:
        return None
    shape = graph.inputs[0].type.shape
    channels, h, w = (
        (shape[1], *shape[2:]) if preprocess.layout == "NCHW" else (shape[3], *shape[1:3])
    )
    square = isinstance(h, int) and h == w and channels == 3
    return h if square else None


def _known_length(data, batch_size: int, limit: int | None) -> int | None:
    # an iterable of batches has no known sample count; a list of arrays does
    if isinstance(data, (list, tuple)) and all(isinstance(b, np.ndarray) for b in data):
        total = sum(int(b.shape[0]) if b.ndim else 0 for b in data)
        return total if limit is None else min(total, limit)
    return None


def _checked(graph: Graph, raw: Iterator, limit: int | None) -> Iterator[Batch]:
    seen = 0
    for index, item in enumerate(raw):
        where = f"data batch {index}"
        batch = _as_inputs(graph, item, where)
        n = _leading(batch, where)
        if limit is not None and seen + n > limit:
            n = limit - seen
            batch = {k: a[:n] for k, a in batch.items()}
        if n > 0:
            seen += n
            yield batch
        if limit is not None and seen >= limit:
            return


def _as_inputs(graph: Graph, item, where: str) -> Batch:
    """One batch (array, sequence or mapping) as name → checked array."""
    names = [v.name for v in graph.inputs]
    if isinstance(item, Mapping):
        missing = [n for n in names if n not in item]
        extra = [k for k in item if k not in names]
        if missing or extra:
            raise InputError(
                f"{where}: inputs missing {missing}, unknown {extra}; the model takes {names}"
            )
        arrays = [item[n] for n in names]
    elif isinstance(item, (tuple, list)):
        if len(item) != len(names):
            raise InputError(
                f"{where}: the model takes {len(names)} input(s) {names}, got {len(item)}"
            )
        arrays = list(item)
    else:
        if len(names) != 1:
            raise InputError(
                f"{where}: the model takes {len(names)} inputs {names}; give a dict by "
                "input name (or a tuple in input order) per batch"
            )
        arrays = [item]
    return {v.name: _check_array(v, a, where) for v, a in zip(graph.inputs, arrays)}


def _check_array(value, array, where: str) -> np.ndarray:
    name = value.name
    if not isinstance(array, np.ndarray):
        if not hasattr(array, "__array__"):
            raise InputError(
                f"{where}: input '{name}' must be a numpy array, got {type(array).__name__}"
            )
        array = np.asarray(array)
    want = value.type
    dtype = want.dtype.numpy
    if array.dtype != dtype:
        if want.dtype.is_float and array.dtype.kind == "f":
            array = array.astype(dtype)  # a copy: the user's array stays as it is
        else:
            hint = " (images need preprocessing to float)" if array.dtype == np.uint8 else ""
            raise InputError(
                f"{where}: input '{name}' must be {dtype} ({want.dtype.short}), "
                f"got {array.dtype}{hint}"
            )
    shape = "[" + ",".join(str(d) for d in want.shape) + "]"
    if array.ndim != want.rank or array.ndim == 0:
        raise InputError(
            f"{where}: input '{name}' must be a batch of shape {shape}, got {list(array.shape)}"
        )
    for d, n in zip(want.shape[1:], array.shape[1:]):
        if isinstance(d, int) and d != n:
            raise InputError(
                f"{where}: input '{name}' must have shape {shape} (any batch), "
                f"got {list(array.shape)}"
            )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{where}: input '{name}' holds {bad} NaN or infinite value(s)")
    return array


def _leading(batch: Batch, where: str) -> int:
    sizes = {k: int(a.shape[0]) for k, a in batch.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"{where}: inputs differ in batch size: {sizes}")
    return next(iter(sizes.values()))


def _static_batch(graph: Graph) -> int | None:
    """The static leading dimension of the graph's inputs, or None if it is symbolic."""
    dims = {
        v.type.shape[0] for v in graph.inputs if v.type.rank and isinstance(v.type.shape[0], int)
    }
    if not dims:
        return None
    if len(dims) > 1:
        raise InputError(f"the graph's inputs have different static batch sizes {sorted(dims)}")
    (b,) = dims
    if b < 1:
        raise InputError("the graph's inputs have a static batch size of 0")
    return b


def _recut(batches: Iterator[Batch], size: int, names: list[str]) -> Iterator[Batch]:
    """Pieces of exactly ``size`` samples across batch boundaries; a short tail is dropped."""
    pending: list[Batch] = []
    count = 0
    for batch in batches:
        n = int(batch[names[0]].shape[0])
        start = 0
        if pending:
            take = min(size - count, n)
            pending.append({k: a[:take] for k, a in batch.items()})
            count += take
            start = take
            if count == size:
                yield {k: np.concatenate([p[k] for p in pending]) for k in names}
                pending, count = [], 0
        while n - start >= size:
            yield {k: a[start : start + size] for k, a in batch.items()}
            start += size
        if start < n:
            pending.append({k: a[start:] for k, a in batch.items()})
            count += n - start
    if count:
        warnings.warn(
            f"calibration: the model's static batch is {size}; the last {count} sample(s) "
            "do not fill a batch and were left out",
            stacklevel=3,
        )
