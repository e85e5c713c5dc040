"""The `attnforms` command: `list` and `check` end to end, in-process."""
import pytest

from attnforms.cli import main


def test_list_names_every_family_and_form(capsys):
    assert main(["list", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("softmax_attention", "gated_delta_rule", "mlstm", "aaren", "kda", "parallel", "chunk", "recurrent"):
        assert name in out


def _check_rows(capsys) -> list[str]:
    assert main(["check", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    return [line for line in out.splitlines() if line.endswith("  ok")]


def test_check_passes_every_row(monkeypatch, capsys):
    # As on a CPU machine without the interpreter: the reference rows only (the kernels
    # have their own tests, and the interpreted rows take minutes; see the slow test).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rows = _check_rows(capsys)
    # 6 softmax + 6 gated delta + 2 mLSTM + 1 Aaren cases, three forms each.
    assert len([line for line in rows if " reference " in line]) == 15 * 3
    assert not [line for line in rows if " triton " in line]


@pytest.mark.slow
def test_check_under_the_interpreter_checks_every_kernel(capsys):
    rows = _check_rows(capsys)
    assert len([line for line in rows if " reference " in line]) == 15 * 3
    # Under the interpreter (set by the conftest) the Triton kernels are checked too:
    # 6 gated delta + 2 mLSTM + 1 Aaren configurations in the chunk and recurrent forms,
    # and 6 softmax cases in all three.
    assert len([line for line in rows if " triton " in line]) == 9 * 2 + 6 * 3


def test_check_reports_a_wrong_form_as_failed(monkeypatch, capsys):
    from attnforms.ops import FAMILIES

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    family = FAMILIES["aaren"]
    right = family.reference["chunk"]

    def off_by_a_bit(*args, **kwargs):
        result = right(*args, **kwargs)
        return result._replace(output=result.output * 1.001)

    monkeypatch.setitem(family.reference, "chunk", off_by_a_bit)
    assert main(["check", "--device", "cpu"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit):
        main(["frobnicate"])
