"""Every `tl.dot` in the Triton kernels states its `input_precision`.

Without one, Triton multiplies float32 operands in TF32 (10-bit mantissa) on NVIDIA GPUs,
so float32 inputs would silently lose float32 accuracy there; the interpreter multiplies
in full float32 whatever the setting, so no numerical test on the CPU can catch a
missing one. The kernels take it from their launchers ("ieee" for float32 inputs).
"""
import ast
from pathlib import Path

import pytest

import attnforms

PACKAGE = Path(attnforms.__file__).parent
# Every directory of Triton kernel modules: each op family's triton/, and kernels/.
KERNEL_DIRECTORIES = sorted(PACKAGE.glob("ops/*/triton")) + [PACKAGE / "kernels"]


def _is_tl_dot(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dot"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "tl")


def _states_precision(call: ast.Call) -> bool:
    # tl.dot(input, other, acc=None, input_precision=None, ...): by keyword or 4th positional.
    return any(k.arg == "input_precision" for k in call.keywords) or len(call.args) >= 4


def dots_without_precision(directory: Path) -> tuple[int, list[str]]:
    """(number of `tl.dot` calls, "file:line" of those without an input_precision)."""
    count, missing = 0, []
    for path in sorted(directory.glob("*.py")):
        calls = [n for n in ast.walk(ast.parse(path.read_text(), filename=str(path))) if _is_tl_dot(n)]
        count += len(calls)
        for call in sorted(calls, key=lambda c: (c.lineno, c.col_offset)):
            if not _states_precision(call):
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}")
    return count, missing


def _family(directory: Path) -> str:
    return directory.parent.name if directory.name == "triton" else directory.name


@pytest.mark.parametrize("directory", KERNEL_DIRECTORIES, ids=_family)
def test_every_dot_states_its_input_precision(directory):
    _, missing = dots_without_precision(directory)
    assert not missing, ("tl.dot without input_precision= (TF32 for float32 operands on the GPU):\n"
                         + "\n".join(missing))


def test_the_scan_sees_the_kernels():
    """The families with tensor-core products are found, multi-line calls included."""
    families = {_family(d): dots_without_precision(d)[0] for d in KERNEL_DIRECTORIES}
    assert {"aaren", "gated_delta", "mlstm", "softmax"} <= set(families)
    assert all(families[f] > 0 for f in ("aaren", "gated_delta", "mlstm", "softmax"))
    tree = ast.parse("x = tl.dot(\n    a,\n    b,\n)\n"
                     "y = tl.dot(a, b, None, 'ieee')\n"
                     "z = tl.dot(a, b, input_precision=P)\n")
    calls = [n for n in ast.walk(tree) if _is_tl_dot(n)]
    assert [_states_precision(c) for c in calls] == [False, True, True]
