"""`attnforms demo --quick` end to end: the report folder and what results.json holds."""
import json

import pytest

from attnforms.check import _cases
from attnforms.cli import main
from attnforms.demo import settings_for
from attnforms.demo.lineup import PRESET_NAMES, lineup
from attnforms.demo.report import PLOTS


def test_quick_demo_writes_the_report(tmp_path, capsys, monkeypatch):
    # As on a CPU machine: the demo's check runs the reference (the interpreted kernel
    # rows take minutes; tests/test_cli.py has them as a slow test).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    for name in ("report.md", "results.json", *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    t0a = results["tasks"]["T0-a"]
    assert set(t0a["results"]) == set(PRESET_NAMES) == set(results["decode"])
    assert results["check"]["passed"] == results["check"]["rows"] > 0
    # On a CPU the runs go one per core; the demo's own process then keeps one thread.
    from attnforms.demo.parallel import available_cores
    from attnforms.demo.run import choose_threads

    assert results["workers"] == min(available_cores(), len(PRESET_NAMES))
    assert results["threads"] == (1 if results["workers"] > 1 else choose_threads())
    for row in t0a["results"].values():
        assert 0 <= row["accuracy"] <= 1 and row["tokens_per_s"] > 0 and row["parameters"] > 0
    assert 0 < t0a["window_reach"] < 1 and t0a["chance"]["context_values"] == pytest.approx(1 / 8)
    # The direct-lookup band lies inside the receptive field, and every model has its bands.
    assert 0 < t0a["window_direct_reach"] < t0a["window_reach"]
    assert all(set(row["bands"]) == {"direct", "field", "beyond"} for row in t0a["results"].values())
    for costs in results["decode"].values():
        assert [c["context"] for c in costs] == list(settings_for("quick", False).contexts)
    # A fixed state does not grow with the context; a global KV cache does.
    assert results["decode"]["gdn"][0]["cache_bytes"] == results["decode"]["gdn"][1]["cache_bytes"]
    assert results["decode"]["transformer"][1]["cache_bytes"] > results["decode"]["transformer"][0]["cache_bytes"]
    printed = capsys.readouterr().out
    assert "softmax transformer" in printed and str(out / "report.md") in printed
    # Progress as it goes: one line per check case and one per trained formulation, so a
    # long run (Triton compiling on a GPU) visibly stays alive.
    lines = printed.splitlines()
    assert sum(line.startswith("  check ") for line in lines) == len(_cases())
    assert sum(line.startswith("  T0-a ") for line in lines) == len(PRESET_NAMES)
    assert "short conv" in (out / "report.md").read_text().lower()


def test_lineup_has_about_equal_parameters():
    entries = lineup(256)
    counts = [entry.parameters for entry in entries]
    assert [entry.preset for entry in entries] == list(PRESET_NAMES)
    assert max(counts) / min(counts) < 1.25
    assert all(entry.config.block_conv and entry.config.short_conv is False for entry in entries)


def test_unknown_preset_is_reported(capsys, tmp_path):
    assert main(["demo", "--quick", "--presets", "transformer,nonsense", "--out", str(tmp_path)]) == 2
    assert "nonsense" in capsys.readouterr().out


def test_levels():
    with pytest.raises(ValueError, match="level"):
        settings_for("huge", False)
    assert settings_for("full", False).t0b and settings_for("default", True).steps > settings_for("default", False).steps


def test_default_cpu_budget_stops_each_formulation_at_what_t0a_asks():
    from attnforms.demo.settings import FIXED_STATE, FIXED_STATE_TARGET, NEGATIVE_CONTROLS, SOFTMAX_TARGET

    cpu = settings_for("default", False)
    assert cpu.stop_for("transformer") == SOFTMAX_TARGET
    assert all(cpu.stop_for(p) == FIXED_STATE_TARGET for p in FIXED_STATE)
    # The negative controls are never stopped by a level they cannot meet; they get a
    # shorter budget instead, and nobody else does.
    assert all(cpu.steps_for(p, cpu.steps) < cpu.steps for p in NEGATIVE_CONTROLS)
    assert all(cpu.steps_for(p, cpu.steps) == cpu.steps for p in PRESET_NAMES if p not in NEGATIVE_CONTROLS)
    # --full and the GPU default keep Zoology's single rule and the whole budget.
    for other in (settings_for("full", False), settings_for("default", True), settings_for("full", True)):
        assert all(other.stop_for(p) == other.stop_at for p in PRESET_NAMES)
        assert all(other.steps_for(p, other.steps) == other.steps for p in PRESET_NAMES)


def test_char_lm_report_gives_the_unigram_baseline(tmp_path, monkeypatch):
    """With the character LM (as `--full` trains it), the report states the unigram
    entropy the models must beat, computed here independently from letter counts."""
    import dataclasses
    import math
    from collections import Counter

    from attnforms.demo import run as demo_run
    from attnforms.tasks import CharLM

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    quick = settings_for("quick", False)
    monkeypatch.setattr(demo_run, "settings_for", lambda level, gpu: dataclasses.replace(quick, char_lm_steps=2))
    results, out = demo_run.run_demo("quick", out=tmp_path / "r", device="cpu", presets=("transformer",),
                                     progress=False)
    char = CharLM(seq_len=128, corpus="pydoc_topics")
    counts = Counter(char.split_ids("validation").tolist())
    total = sum(counts.values())
    expected = -sum(c / total * math.log2(c / total) for c in counts.values())
    unigram = results["tasks"]["char-LM"]["unigram_bits"]
    assert unigram["validation"] == pytest.approx(expected, rel=1e-9)
    assert f"{expected:.3f}" in (out / "report.md").read_text()
