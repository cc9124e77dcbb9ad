"""The tiny FileCheck the pass tests rely on: it must reject as surely as it accepts."""

from __future__ import annotations

import pytest
from filecheck import FileCheckError, filecheck

TEXT = """graph @g(%x: f32[4]) {
  %a = relu(%x) : f32[4]
  %b = tanh(%a) : f32[4]
  %c = add(%a, %b) : f32[4]
  return %c
}
"""


@pytest.mark.parametrize(
    "checks",
    [
        "// CHECK: %a = relu(%x)\n// CHECK-NEXT: %b = tanh(%a)\n// CHECK-NEXT: %c = add",
        "CHECK: graph @g\nCHECK: %c = add(%a, %b)\nCHECK-SAME: : f32[4]",
        "// CHECK: %a = relu\n// CHECK-NOT: sigmoid\n// CHECK: return %c",
        "// CHECK: %b = {{[a-z]+}}(%a) : f32[{{\\d}}]",
        "// CHECK: relu\n// CHECK-NOT: relu",
        "// CHECK: %a\n// CHECK-SAME: relu(%x)\n// CHECK-NEXT: tanh",
        "// CHECK: [4]) {",  # outside {{ }}, brackets and braces are literal text
    ],
)
def test_matching_checks_pass(checks):
    filecheck(TEXT, checks)


@pytest.mark.parametrize(
    "checks,message",
    [
        ("// CHECK: sigmoid", "check line 1: CHECK: 'sigmoid' not found"),
        ("// CHECK: %b = tanh\n// CHECK: %a = relu", "check line 2: CHECK: '%a = relu'"),
        ("// CHECK: %a = relu\n// CHECK-NEXT: %c = add", "not found on the next line"),
        ("// CHECK: %c = add\n// CHECK-SAME: relu", "not found on the same line"),
        ("// CHECK: %a = relu\n// CHECK-NOT: tanh\n// CHECK: add", "CHECK-NOT: 'tanh' found"),
        ("// CHECK: %c = add\n// CHECK-NOT: return", "CHECK-NOT: 'return' found"),
        ("// CHECK: }\n// CHECK-NEXT: x", "not found on the next line"),
        ("// CHECK: %b = {{[0-9]+}}", "not found"),
    ],
)
def test_mismatching_checks_fail(checks, message):
    with pytest.raises(FileCheckError) as info:
        filecheck(TEXT, checks)
    assert message in str(info.value)


def test_failure_quotes_the_searched_text():
    with pytest.raises(FileCheckError) as info:
        filecheck(TEXT, "// CHECK: %b = tanh\n// CHECK-NEXT: %d")
    assert "text from line 4:\n     4 |   %c = add(%a, %b) : f32[4]" in str(info.value)


def test_malformed_checks_are_errors():
    with pytest.raises(ValueError, match="no CHECK directives"):
        filecheck(TEXT, "// nothing to see")
    with pytest.raises(ValueError, match="cannot come first"):
        filecheck(TEXT, "// CHECK-NEXT: relu")
    with pytest.raises(ValueError, match="empty pattern"):
        filecheck(TEXT, "// CHECK:   ")
