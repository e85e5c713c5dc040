"""The demo report's expectation column: what each task asks of each formulation, and
whether it was met, from the measured numbers (no training here)."""
from attnforms.demo.report import main_table


def _block(metric, values, **extra):
    results = {preset: {"label": preset, "d_model": 64, "parameters": 1, "state_bytes_per_layer": 1, "lr": 3e-3,
                        "tokens_per_s": 1, metric: value} for preset, value in values.items()}
    return {"metric": metric, "task": {"seq_len": 64}, "steps": 10, "results": results, **extra}


def _rows(table):
    return {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |") for line in table.splitlines()[2:]}


def test_t0b_asks_softmax_at_099_and_fixed_state_below_it():
    block = _block("accuracy", {"transformer": 0.995, "gdn": 0.5, "mlstm": 0.996, "aaren": 0.1})
    rows = _rows(main_table({"tasks": {"T0-b": block}}, "T0-b"))
    assert rows["transformer"] == "≥ 0.99: met"
    assert rows["gdn"] == "below the softmax control's 0.995: met"
    assert rows["mlstm"] == "below the softmax control's 0.995: NOT met"
    assert rows["aaren"] == ""


def test_char_lm_asks_a_bit_below_the_unigram_entropy():
    block = _block("bits_per_char", {"transformer": 1.8, "aaren": 3.7},
                   unigram_bits={"validation": 4.5, "train": 4.7})
    rows = _rows(main_table({"tasks": {"char-LM": block}}, "char-LM"))
    assert rows["transformer"] == "≤ unigram 4.50 − 1: met"
    assert rows["aaren"] == "≤ unigram 4.50 − 1: NOT met"
