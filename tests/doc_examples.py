"""The fenced code blocks of README.md and docs/*.md, for tests/unit/test_doc_examples.py.

``doc_blocks()`` finds every fenced block with its file, line, language and section;
``shell_pipelines()`` splits a shell block into commands (backslash continuations joined,
``#`` comments dropped, ``|`` and ``<`` / ``>`` kept as pipes and redirections);
``irc_names()`` lists the ``irc`` names a Python block uses (imports and attribute chains)
and ``missing_irc_names()`` those the installed package lacks; ``write_substitutes()`` writes
the small stand-ins (a tiny ONNX classifier, labelled image folders, ``x.npy``) under the
file names the examples use; ``run_irc()`` runs one ``irc`` command in-process.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx_builders import small_convnet

from irc.tools.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

# How a block is checked, by the language named after its opening fence. A language not
# listed here fails the collection test, so a new one is decided on, not skipped silently.
PYTHON, SHELL, TEXT = "python", "shell", "text"
LANGUAGES = {
    "python": PYTHON,
    "py": PYTHON,
    "sh": SHELL,
    "bash": SHELL,
    "shell": SHELL,
    "console": SHELL,  # only the lines after a `$ ` prompt are commands
    "": TEXT,  # output, the text IR, layer tables: not run (see text_commands)
    "text": TEXT,
}

SUBSTITUTE_CLASSES = 10  # the substitute model's classes; image labels stay below it


def doc_files() -> list[Path]:
    """README.md and every docs/*.md, in a fixed order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language and its text."""

    file: str  # relative to the repository root, e.g. "docs/decision.md"
    line: int  # 1-based line of the opening fence
    language: str  # as written after the fence ("" for none)
    section: str  # the title of the nearest heading above it
    number: int  # 1-based position among the fenced blocks of that section
    code: str

    @property
    def id(self) -> str:
        """The test id: ``README.md:50``."""
        return f"{self.file}:{self.line}"

    @property
    def key(self) -> str:
        """A name that survives edits above the block: ``README.md § Quick start #1``."""
        return f"{self.file} § {self.section} #{self.number}"

    @property
    def kind(self) -> str | None:
        """PYTHON, SHELL or TEXT; None for a language LANGUAGES does not list."""
        return LANGUAGES.get(self.language.lower())


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^\s`{]*)")


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of one markdown file (an unclosed fence runs to the end)."""
    lines = path.read_text().splitlines()
    name = path.relative_to(ROOT).as_posix()
    blocks: list[Block] = []
    section, number, i = "", 0, 0
    while i < len(lines):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", lines[i])
        if heading:
            section, number = heading.group(1), 0
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        marker, language = fence.group(2), fence.group(3)
        end = i + 1
        closing = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}\s*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        number += 1
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(name, i + 1, language, section, number, code))
        i = end + 1
    return blocks


def doc_blocks() -> list[Block]:
    """Every fenced block of README.md and docs/*.md."""
    return [block for path in doc_files() for block in parse_blocks(path)]


@dataclass(frozen=True)
class Stage:
    """One command of a pipeline: its words and its ``<`` / ``>`` files."""

    argv: tuple[str, ...]
    stdin: str | None = None
    stdout: str | None = None

    @property
    def text(self) -> str:
        """The words joined by spaces (what the tables' prefixes match)."""
        return " ".join(self.argv)


@dataclass(frozen=True)
class Pipeline:
    """Commands joined by ``|``, from one logical line (at ``line`` of its file)."""

    line: int
    stages: tuple[Stage, ...]


def logical_lines(code: str, first_line: int, console: bool = False) -> list[tuple[int, str]]:
    """(file line, text) of each command line, backslash continuations joined; in a
    console block only the lines after a ``$ `` prompt (and their continuations)."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for offset, raw in enumerate(code.splitlines()):
        line = raw
        if not pending and console:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            start = first_line + 1 + offset
        if line.rstrip().endswith("\\") and not _in_comment(line):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        text = " ".join(pending).strip()
        pending = []
        if text:
            out.append((start, text))
    if pending:
        out.append((start, " ".join(pending).strip()))
    return out


def _in_comment(line: str) -> bool:
    """Whether the line's end lies in a ``#`` comment (a trailing ``\\`` there is text)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:
        return False
    return any(w.startswith("#") for w in words)


def split_pipelines(line: int, text: str) -> list[Pipeline]:
    """The pipelines of one logical shell line (``;`` and ``&&`` separate them)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)  # comments dropped: shlex's commenters is "#"
    pipelines: list[Pipeline] = []
    stages: list[Stage] = []
    argv: list[str] = []
    redirect: dict[str, str] = {}
    i = 0
    while i < len(words) + 1:
        word = words[i] if i < len(words) else ";"
        if word in ("<", ">"):
            redirect["stdin" if word == "<" else "stdout"] = words[i + 1]
            i += 2
            continue
        if word in ("|", ";", "&&"):
            if argv:
                stages.append(Stage(tuple(argv), redirect.get("stdin"), redirect.get("stdout")))
            argv, redirect = [], {}
            if word != "|" and stages:
                pipelines.append(Pipeline(line, tuple(stages)))
                stages = []
        else:
            argv.append(word)
        i += 1
    return pipelines


def shell_pipelines(block: Block) -> list[Pipeline]:
    """Every pipeline of a shell block."""
    console = block.language.lower() == "console"
    return [
        pipeline
        for line, text in logical_lines(block.code, block.line, console=console)
        for pipeline in split_pipelines(line, text)
    ]


def text_commands(block: Block) -> list[Pipeline]:
    """The ``irc`` command lines of a text block (a transcript that shows a command to
    type next, as docs/decision.md's budget miss does); output lines are left out."""
    return [
        pipeline
        for line, text in logical_lines(block.code, block.line)
        if text.startswith("irc ")
        for pipeline in split_pipelines(line, text)
    ]


# --- Python blocks: the irc names they use ---------------------------------------------


def irc_names(code: str) -> list[tuple[int, str]]:
    """(line, dotted name) of each ``irc`` name the code uses: ``import irc.x``, ``from
    irc.x import y`` (as ``irc.x.y``) and the attribute chains on names bound by those
    imports (``irc.compile``, ``stages.float_graph`` as ``irc.stages.float_graph``)."""
    tree = ast.parse(code)
    bound = {"irc": "irc"}  # local name -> dotted irc name (irc itself even unimported)
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "irc":
                    names.append((node.lineno, alias.name))
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else "irc"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "irc":
                for alias in node.names:
                    names.append((node.lineno, f"{node.module}.{alias.name}"))
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
            chain: list[str] = []
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound:
                names.append((node.lineno, ".".join([bound[inner.id], *reversed(chain)])))
    return sorted(set(names))


def resolve(dotted: str) -> object:
    """The object a dotted ``irc`` name names, importing submodules as Python would;
    AttributeError or ImportError when it does not exist."""
    parts = dotted.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def missing_irc_names(code: str, fence_line: int = 0) -> list[str]:
    """``line N: irc.x.y`` for each irc name of ``code`` the installed package lacks; N
    counts from the block's opening fence at ``fence_line`` (its file line)."""
    missing = []
    for line, dotted in irc_names(code):
        try:
            resolve(dotted)
        except (AttributeError, ImportError):
            missing.append(f"line {fence_line + line}: {dotted}")
    return missing


# --- the substitutes ------------------------------------------------------------------


def substitute_model() -> onnx.ModelProto:
    """tests/onnx_builders.py's ``small_convnet`` (stem, depthwise, pointwise, fc) taking
    what the ImageNet models take: input ``input`` float32 [N,3,224,224], output
    ``logits`` [N,10]; its stem's stride is 8, so a 224x224 image costs little."""
    model = small_convnet()
    graph = model.graph
    rename = {"x": "input", "y": "logits"}
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        node.output[:] = [rename.get(name, name) for name in node.output]
        if node.name == "stem":
            for attribute in node.attribute:
                if attribute.name == "strides":
                    attribute.ints[:] = [8, 8]
    del graph.input[:]
    del graph.output[:]
    graph.input.append(
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
    )
    graph.output.append(
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", SUBSTITUTE_CLASSES])
    )
    onnx.checker.check_model(model)
    return model


def write_image_folder(folder: Path, count: int, seed: int) -> None:
    """``count`` random 240x256 PNG photographs and their ``labels.txt`` (labels below
    SUBSTITUTE_CLASSES), large enough for the 256/224 resize-and-crop presets."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        pixels = rng.integers(0, 256, (240, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        lines.append(f"img{i:02d}.png {i % SUBSTITUTE_CLASSES}")
    (folder / "labels.txt").write_text("\n".join(lines) + "\n")


def input_array(batch: int = 1) -> np.ndarray:
    """A float32 [batch,3,224,224] input for the substitute model."""
    return np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)


def write_substitutes(folder: Path, substitutes: dict[str, str], x_batch: int = 1) -> None:
    """Write each file name of ``substitutes`` (name -> "model", "images" or "array")
    under ``folder``: the substitute model, an image folder, or ``input_array(x_batch)``."""
    model = substitute_model()
    for seed, (name, what) in enumerate(substitutes.items()):
        path = folder / name
        if what == "model":
            onnx.save(model, path)
        elif what == "images":
            write_image_folder(path, 8, seed)
        elif what == "array":
            np.save(path, input_array(x_batch))
        else:
            raise ValueError(f"substitute {name!r}: unknown kind {what!r}")


# --- running irc commands -------------------------------------------------------------


def run_irc(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``irc argv`` run in-process by
    ``irc.tools.cli.main``, with ``stdin`` as standard input; argparse's exits (a bad flag)
    come back as their code."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin or b""))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def parse_irc(argv: list[str]) -> str | None:
    """None when the ``irc`` command's parser (``irc.tools.cli.build_parser``) accepts
    ``argv``, else its error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            return err.getvalue().strip() or f"exit code {e.code}"
    return None
