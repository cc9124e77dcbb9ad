"""The stage cache of a strategy compile: each stage's result kept on disk, keyed by what
it depends on, so that a second compile with the same inputs reuses it.

    >>> cache = StageCache.open(graph, options, input_shapes)    # None: off, or data unkeyable
    >>> calibration = cache.load_calibration()                    # None on a miss
    >>> cache.save_calibration(calibration)                       # as soon as the stage ends

The folder is ``CompileOptions.stage_cache`` when it is a path, else ``stages/`` under
``$IRC_CACHE_DIR`` (default ``~/.cache/irc``, where the cost model keeps its measurements).
Each stage's result is one ``<stage>-<key>.json`` (facts) and, for arrays, one
``<stage>-<key>.npz`` read with ``allow_pickle=False``: a cache file holds numbers and
text, never code. The stages and what their keys hold (each also the cache format and the
irc version):

- ``calibration``: the float graph (``irc.build.graph_key``), the calibration data (a
  folder, or the part of one a held-out split leaves: the names, sizes and modification
  times of the images used and of ``labels.txt``, the preprocessing and the limit; an
  array: its bytes), the method and engine. Kept: ranges, count, and per observed value
  its min/max, channel sums and histogram (what bias correction and
  ``Calibration.recompute`` read);
- ``statistics``: GPTQ's rounding statistics per layer (``irc.gptq.InputStatistics``),
  keyed by the graph, the data and the sensitivity sample they skip;
- ``sensitivity``: the sensitivity table, keyed by the calibration's and statistics' keys,
  the rounding, the weight clipping, the sample size and the labels;
- ``choice``: the plan chosen, its verification, every attempt and the cost model, keyed
  by the table's content, the strategy, budgets and options, the held-out images, the
  input shapes, threads and this machine.

A file that cannot be read, or that holds another key, is ignored with a one-line warning
on stderr and the stage runs again. Data given as an iterable of batches has no key: the
cache is then off for that compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from irc.build import graph_key
from irc.calibration import Calibration
from irc.calibration.images import ImageSet, list_images, read_labels
from irc.calibration.observers import observer_from_state, observer_state
from irc.calibration.progress import note
from irc.decision.budgets import Budgets
from irc.decision.choose import Choice, Verification
from irc.decision.cost import CostModel
from irc.decision.costs_measure import machine_info
from irc.decision.planning import Decision
from irc.decision.table import SensitivityTable
from irc.errors import InputError
from irc.gptq import statistics_arrays, statistics_from_arrays
from irc.pipelines import float_pipeline_to_quantize
from irc.version import __version__

FORMAT = 3  # the layout of the cache files; a change makes every older file a miss
COST_ARRAYS = ("latency", "bytes", "allowed", "measured", "transition")


def cache_folder(setting) -> Path | None:
    """Where the stage cache lives: ``setting`` itself when it is a path, ``stages/`` under
    ``$IRC_CACHE_DIR`` (default ``~/.cache/irc``) when it is True, None when it is off."""
    if setting is None or setting is False:
        return None
    if setting is True:
        root = os.environ.get("IRC_CACHE_DIR") or Path.home() / ".cache" / "irc"
        return Path(root) / "stages"
    return Path(setting)


def digest(*parts) -> str:
    """A short hex digest of JSON-able ``parts`` (other objects by their ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def array_digest(array) -> str:
    """A digest of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=12)
    h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def data_digest(data, preprocess, limit: int | None) -> str | None:
    """A digest of calibration ``data`` as the compile reads it: a folder by the names,
    sizes and modification times of the images used (the first ``limit``, and those its
    ``labels.txt`` lists) and by ``labels.txt`` itself; an array, or a dict of them, by
    their bytes. None for anything else (an iterable of batches), or a folder that cannot
    be listed (the calibration reports that)."""
    if isinstance(data, np.ndarray):
        parts = ["array", array_digest(data)]
    elif isinstance(data, dict) and all(isinstance(v, np.ndarray) for v in data.values()):
        parts = ["arrays", {k: array_digest(v) for k, v in sorted(data.items())}]
    elif isinstance(data, ImageSet):
        try:
            parts = ["images", _stats(data.folder, data.names[:limit]), data.labels]
        except OSError:
            return None
    elif isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        try:
            parts = ["folder", _folder_files(Path(data), limit)]
        except (InputError, OSError):
            return None
    else:
        return None
    return digest(*parts, _preprocess_text(preprocess), limit)


def _folder_files(folder: Path, limit: int | None) -> list:
    """(name, size, mtime in ns) of the images used from ``folder`` and of its labels."""
    names = [p.name for p in list_images(folder, limit)]
    labels = folder / "labels.txt"
    if labels.is_file():
        names += [name for name, _ in read_labels(folder)[:limit]]
        names.append("labels.txt")
    return _stats(folder, sorted(set(names)))


def _stats(folder: Path, names) -> list:
    """(name, size, mtime in ns) of each file ``names`` lists in ``folder``."""
    files = []
    for name in names:
        stat = (folder / name).stat()
        files.append((name, stat.st_size, stat.st_mtime_ns))
    return files


def _preprocess_text(preprocess) -> str | None:
    return None if preprocess is None else str(preprocess)


def table_digest(table: SensitivityTable) -> str:
    """A digest of a sensitivity table's content (the time it took left out)."""
    facts = table.to_dict()
    facts.pop("seconds", None)
    return digest(facts)


@dataclass(frozen=True)
class StageKeys:
    """The key of each stage of one compile (see the module docstring)."""

    calibration: str
    statistics: str
    sensitivity: str
    choice: str  # without the table's content: ``choice_key`` adds it


def stage_keys(graph, options, input_shapes) -> StageKeys | None:
    """The keys of a strategy compile of float ``graph`` under ``options`` (a
    ``CompileOptions``); None when its calibration data has no key."""
    data = data_digest(options.calibration, options.preprocess, options.calibration_limit)
    if data is None:
        return None
    model = graph_key(graph, float_pipeline_to_quantize(options.pipeline))
    base = (FORMAT, __version__, model, data)
    calibration = digest(*base, "calibration", options.calibration_method,
                         options.calibration_engine)  # fmt: skip
    statistics = digest(*base, "statistics", options.sensitivity_limit)
    labels = None if options.labels is None else array_digest(np.asarray(options.labels))
    rounding = options.weight_rounding
    sensitivity = digest(*base, "sensitivity", calibration,
                         statistics if rounding != "nearest" else None, rounding,
                         options.weight_clipping, options.sensitivity_limit,
                         labels)  # fmt: skip
    budgets = asdict(options.budgets) if options.budgets is not None else None
    shapes = None if input_shapes is None else {k: list(v) for k, v in input_shapes.items()}
    holdout = options.holdout
    if isinstance(holdout, (str, os.PathLike, ImageSet)):
        holdout = data_digest(holdout, options.preprocess, None)
    choice = digest(*base, "choice", sensitivity, options.strategy, budgets,
                    options.strategy_options, shapes, options.num_threads,
                    machine_info(options.num_threads or 1), holdout)  # fmt: skip
    return StageKeys(calibration, statistics, sensitivity, choice)


class StageCache:
    """Reads and writes one compile's stages in a cache folder (see the module)."""

    def __init__(self, folder: Path, keys: StageKeys, progress: bool = True):
        self.folder, self.keys, self.progress = Path(folder), keys, progress

    @classmethod
    def open(cls, graph, options, input_shapes=None) -> StageCache | None:
        """The cache of a strategy compile under ``options``; None when
        ``options.stage_cache`` is off or the calibration data has no key."""
        folder = cache_folder(options.stage_cache)
        if folder is None:
            return None
        keys = stage_keys(graph, options, input_shapes)
        return None if keys is None else cls(folder, keys, options.progress)

    # -- calibration
    def load_calibration(self) -> Calibration | None:
        """The cached calibration (without GPTQ statistics), or None."""
        entry = self._read("calibration", self.keys.calibration)
        if entry is None:
            return None
        calibration = self._guarded("calibration", lambda: calibration_from_state(*entry))
        if calibration is not None:
            self._reused("calibrate", "calibration", self.keys.calibration,
                         f"{calibration.count} img")  # fmt: skip
        return calibration

    def save_calibration(self, calibration: Calibration) -> None:
        """Keep ``calibration``'s ranges and statistics (not its GPTQ statistics)."""
        self._write("calibration", self.keys.calibration, *calibration_state(calibration))

    # -- GPTQ statistics
    def load_statistics(self) -> dict | None:
        """The cached GPTQ statistics (layer name → ``InputStatistics``), or None."""
        entry = self._read("statistics", self.keys.statistics)
        if entry is None:
            return None
        statistics = self._guarded("statistics", lambda: statistics_from_state(*entry))
        if statistics is not None:
            self._reused("gptq statistics", "statistics", self.keys.statistics,
                         f"{len(statistics)} layers")  # fmt: skip
        return statistics

    def save_statistics(self, statistics: dict) -> None:
        """Keep GPTQ statistics (layer name → ``InputStatistics``)."""
        self._write("statistics", self.keys.statistics, *statistics_state(statistics))

    # -- sensitivity table
    def load_table(self) -> SensitivityTable | None:
        """The cached sensitivity table, or None."""
        entry = self._read("sensitivity", self.keys.sensitivity)
        if entry is None:
            return None
        table = self._guarded("sensitivity", lambda: SensitivityTable.from_dict(entry[0]))
        if table is not None:
            self._reused("sensitivity", "sensitivity", self.keys.sensitivity,
                         f"{len(table.layers)} layers, {table.images} img")  # fmt: skip
        return table

    def save_table(self, table: SensitivityTable) -> None:
        """Keep the sensitivity table."""
        self._write("sensitivity", self.keys.sensitivity, table.to_dict(), {})

    # -- the verified choice
    def choice_key(self, table: SensitivityTable) -> str:
        """The choice's key: the compile's with the content of the table it decides on."""
        return digest(self.keys.choice, table_digest(table))

    def load_choice(self, table: SensitivityTable) -> Choice | None:
        """The cached choice decided on ``table``, with no model (``model`` None) and
        ``reused`` set, or None."""
        key = self.choice_key(table)
        entry = self._read("choice", key)
        if entry is None:
            return None
        choice = self._guarded("choice", lambda: choice_from_state(*entry, table))
        if choice is not None:
            v = choice.verification
            self._reused("plan", "choice", key, f"verified {v.bytes} bytes, "
                         f"{v.latency * 1e3:.3g} ms")  # fmt: skip
        return choice

    def save_choice(self, choice: Choice) -> None:
        """Keep ``choice``'s plan, verification, attempts and cost model."""
        self._write("choice", self.choice_key(choice.table), *choice_state(choice))

    # -- files
    def path(self, stage: str, key: str, suffix: str) -> Path:
        """The file of ``stage`` under ``key`` (``.json`` or ``.npz``)."""
        return self.folder / f"{stage}-{key}{suffix}"

    def _read(self, stage: str, key: str) -> tuple[dict, dict] | None:
        """(facts, arrays) of an entry; None when absent or unreadable (with a warning)."""
        path = self.path(stage, key, ".json")
        if not path.is_file():
            return None
        return self._guarded(stage, lambda: self._read_files(stage, key, path))

    def _read_files(self, stage: str, key: str, path: Path) -> tuple[dict, dict]:
        with open(path) as f:
            entry = json.load(f)
        if entry.get("format") != FORMAT or entry.get("stage") != stage or entry.get("key") != key:
            raise ValueError("it holds another stage, key or format")
        arrays = {}
        if entry.get("arrays"):
            with np.load(self.path(stage, key, ".npz"), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        return entry["facts"], arrays

    def _write(self, stage: str, key: str, facts: dict, arrays: dict) -> None:
        """Write an entry (arrays first, then the facts that make it whole), each file
        atomically; a failure is a warning (the compile goes on)."""
        entry = {"format": FORMAT, "stage": stage, "key": key, "irc": __version__,
                 "arrays": bool(arrays), "facts": facts}  # fmt: skip
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if arrays:
                _atomic(self.path(stage, key, ".npz"), lambda f: np.savez(f, **arrays))
            text = json.dumps(entry, default=_json_default)
            _atomic(self.path(stage, key, ".json"), lambda f: f.write(text.encode()))
        except (OSError, ValueError, TypeError) as e:
            _warn(f"cannot write the {stage} cache in {_shown(self.folder)}: {e}")

    def _guarded(self, stage: str, read):
        """``read()``, or None with a one-line warning when it fails (a corrupt file)."""
        try:
            return read()
        except Exception as e:  # noqa: BLE001 - any corrupt file is a miss, never a traceback
            _warn(f"ignoring the corrupt {stage} cache in {_shown(self.folder)} "
                  f"({type(e).__name__}: {e}); computing it again")  # fmt: skip
            return None

    def _reused(self, label: str, stage: str, key: str, what: str) -> None:
        shown = _shown(self.path(stage, key[:12], "…"))
        note(f"{label}: reused from {shown} ({what})", enabled=self.progress)


def calibration_state(calibration: Calibration) -> tuple[dict, dict]:
    """(facts, arrays) of a ``Calibration`` (its GPTQ statistics left out)."""
    names = list(calibration.ranges)
    facts = {"method": calibration.method, "count": calibration.count, "names": names,
             "percentile": calibration.percentile, "entropy_bins": calibration.entropy_bins,
             "exact": sorted(calibration.exact), "scores": calibration.scores,
             "observers": []}  # fmt: skip
    arrays = {"ranges": np.array([calibration.ranges[n] for n in names], np.float64)}
    observed = [n for n in names if n in calibration.observers]
    facts["observed"] = observed
    for i, name in enumerate(observed):
        state, own = observer_state(calibration.observers[name])
        facts["observers"].append(state)
        arrays.update({f"o{i}_{k}": v for k, v in own.items()})
    return facts, arrays


def calibration_from_state(facts: dict, arrays: dict) -> Calibration:
    """The ``Calibration`` ``calibration_state`` described."""
    names, ranges = facts["names"], arrays["ranges"]
    if ranges.shape != (len(names), 2):
        raise ValueError(f"ranges have shape {ranges.shape} for {len(names)} values")
    observers = {}
    for i, name in enumerate(facts["observed"]):
        own = {k.split("_", 1)[1]: v for k, v in arrays.items() if k.startswith(f"o{i}_")}
        observers[name] = observer_from_state(facts["observers"][i], own)
    return Calibration({n: (float(lo), float(hi)) for n, (lo, hi) in zip(names, ranges)},
                       facts["method"], int(facts["count"]), observers,
                       percentile=float(facts["percentile"]),
                       entropy_bins=int(facts["entropy_bins"]),
                       exact=facts["exact"], scores=facts["scores"])  # fmt: skip


def statistics_state(statistics: dict) -> tuple[dict, dict]:
    """(facts, arrays) of GPTQ statistics (layer name → ``InputStatistics``)."""
    facts, arrays = {"layers": [], "facts": []}, {}
    for i, (name, stats) in enumerate(statistics.items()):
        own_facts, own = statistics_arrays(stats)
        facts["layers"].append(name)
        facts["facts"].append(own_facts)
        arrays.update({f"s{i}_{k}": v for k, v in own.items()})
    return facts, arrays


def statistics_from_state(facts: dict, arrays: dict) -> dict:
    """The GPTQ statistics ``statistics_state`` described."""
    out = {}
    for i, name in enumerate(facts["layers"]):
        own = {k.split("_", 1)[1]: v for k, v in arrays.items() if k.startswith(f"s{i}_")}
        out[name] = statistics_from_arrays(facts["facts"][i], own)
    return out


def choice_state(choice: Choice) -> tuple[dict, dict]:
    """(facts, arrays) of a verified ``Choice``: its decision, verification, attempts,
    budgets, stage seconds and cost model (not its model nor its table)."""
    cost = choice.cost
    facts = {
        "decision": _decision_facts(choice.decision),
        "verification": asdict(choice.verification),
        "attempts": [[_decision_facts(d), asdict(v), list(missed)]
                     for d, v, missed in choice.attempts],
        "budgets": None if choice.budgets is None else asdict(choice.budgets),
        "seconds": dict(choice.seconds),
        "cost": {"layers": list(cost.layers), "precisions": list(cost.precisions),
                 "other_bytes": int(cost.other_bytes),
                 "other_latency": float(cost.other_latency), "machine": cost.machine,
                 "extra": _json_only(cost.extra)},
    }  # fmt: skip
    arrays = {name: np.asarray(getattr(cost, name)) for name in COST_ARRAYS}
    return facts, arrays


def choice_from_state(facts: dict, arrays: dict, table: SensitivityTable) -> Choice:
    """The ``Choice`` ``choice_state`` described, on ``table``: no model, ``reused`` set."""
    c = facts["cost"]
    cost = CostModel(list(c["layers"]), tuple(c["precisions"]),
                     *(arrays[name] for name in COST_ARRAYS), int(c["other_bytes"]),
                     float(c["other_latency"]), c["machine"], dict(c["extra"]))  # fmt: skip
    attempts = [(_decision(d), Verification(**v), list(missed))
                for d, v, missed in facts["attempts"]]  # fmt: skip
    budgets = None if facts["budgets"] is None else Budgets(**facts["budgets"])
    return Choice(None, _decision(facts["decision"]), table, cost,
                  Verification(**facts["verification"]), attempts, budgets,
                  dict(facts["seconds"]), reused=True)  # fmt: skip


def _decision_facts(decision: Decision) -> dict:
    facts = decision.to_dict()
    facts["details"] = _json_only(facts.get("details", {}))
    return facts


def _decision(facts: dict) -> Decision:
    sqnr = facts["predicted_sqnr"]
    return Decision(facts["strategy"], dict(facts["plan"]), int(facts["predicted_bytes"]),
                    float(facts["predicted_latency"]), float(sqnr), dict(facts["reasons"]),
                    float(facts["seconds"]), dict(facts.get("details", {})))  # fmt: skip


def _json_only(d: dict) -> dict:
    """The entries of ``d`` that survive a JSON round trip unchanged in kind."""
    out = {}
    for k, v in d.items():
        try:
            out[str(k)] = json.loads(json.dumps(v, default=_json_default))
        except (TypeError, ValueError):
            continue
    return out


def _json_default(value):
    """numpy scalars and arrays as plain numbers and lists (anything else: TypeError)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _atomic(path: Path, write) -> None:
    """``write(binary file)`` into a temporary file beside ``path``, then moved onto it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # as an ordinary file (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _shown(path: Path) -> str:
    """``path`` with the home folder written ``~``."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


def _warn(text: str) -> None:
    sys.stderr.write(f"irc: warning: stage cache: {text}\n")
    sys.stderr.flush()
