"""The softmax ops of the benchmark on the CPU: FLOP and byte counts against hand counts
and BENCHMARKS.md, the plan, the pairings and their floors against issue 6's target
table, the peers' conventions against attnforms' float64 reference (through the same
gate the GPU run uses), the never-seen mod, and `attnforms bench --quick` end to end.
No test asserts a timing."""
import json
import subprocess
import sys

import pytest
import torch

from attnforms.bench import flops
from attnforms.bench.cases import OP_KEYS, blank_row, make_runner, pairings, plan
from attnforms.bench.family import Item
from attnforms.bench.gate import check, expected
from attnforms.bench.report import Row, compute_ratios, format_tables, targets
from attnforms.bench.shapes import CANONICAL, QUICK
from attnforms.bench.softmax import (
    OPS, WorkerInputs, decode_inputs, new_score_mod, score_mod_factory, sequence_inputs,
)
from attnforms.bench.softmax_peers import flex, sdpa, sdpa_decode
from attnforms.cli import main

SOFTMAX_OPS = ("softmax_causal", "softmax_window", "softmax_alibi", "softmax_new_mod", "softmax_decode")


# ----------------------------------------------------------------------------- counts

def test_softmax_flops_and_bytes_match_hand_counts():
    # T = 4: queries see 1, 2, 3, 4 keys (10 pairs); with a window of 2: 1, 2, 2, 2 (7).
    assert flops.causal_pairs(4) == 10 and flops.causal_pairs(4, window=2) == 7
    assert flops.causal_pairs(4, window=9) == 10
    # Per pair 2·K for the score and 2·V for the value: K = 2, V = 3 -> 10 FLOPs.
    assert flops.softmax_flops(1, 4, 1, 2, 3) == 100
    assert flops.softmax_flops(2, 4, 3, 2, 3, window=2) == 2 * 3 * 7 * 10
    assert flops.softmax_fwd_bwd_flops(100.0) == 350.0
    # Decode: one query sees L + 1 keys; the cache and the new k, v are read once, q
    # read and o written: B = 2, L = 3, H = 1, K = 2, V = 3 -> 2·4·5 + 2·5 elements.
    assert flops.softmax_decode_flops(2, 3, 1, 2, 3) == 2 * 4 * 10
    assert flops.softmax_decode_bytes(2, 3, 1, 2, 3) == (2 * 4 * 5 + 2 * 5) * 2


def test_softmax_counts_reproduce_benchmarks_md():
    # "SDPA, cuDNN backend | S1 | 0.994 ms | 553 TFLOP/s" (4·B·H·T²·D / 2 FLOPs).
    s1 = flops.softmax_flops(8, 4096, 16, 128, 128)
    assert s1 == pytest.approx(4 * 8 * 16 * 4096 ** 2 * 128 / 2, rel=3e-4)
    assert flops.tflops(s1, 0.994) == pytest.approx(553, rel=2e-3)
    # "SDPA over a KV cache | 64 | 32768 | 3782 µs (4.5 TB/s)".
    nbytes = flops.softmax_decode_bytes(64, 32768, 16, 128, 128)
    assert nbytes / 3782e-6 / 1e12 == pytest.approx(4.5, abs=0.05)


# ----------------------------------------------------------------------------- plan

def test_plan_puts_the_new_mod_first_unwarmed_then_decode_then_shapes():
    items = plan(SOFTMAX_OPS, ("S1", "S2", "decode"), CANONICAL, "triton")
    assert items[0] == Item("sequence", "softmax_new_mod", "ours (triton)", "S1", warm_up=False)
    assert all(item.warm_up for item in items[1:])
    decode = [i for i in items if i.section == "decode"]
    assert [i.runner for i in decode] == ["ours (triton)", "sdpa (default)", "sdpa flash", "sdpa cudnn"]
    assert {i.shape for i in decode} == {"B=64"}
    sequence = [(i.shape, i.op_key, i.runner) for i in items[1 + len(decode):]]
    expected_peers = {"softmax_causal": ["sdpa flash", "sdpa cudnn", "flex (compiled)"],
                      "softmax_window": ["flex (compiled)"], "softmax_alibi": ["flex (compiled)"]}
    assert sequence == [(shape, key, runner) for shape in ("S1", "S2") for key, peers in expected_peers.items()
                        for runner in ["ours (triton)", *peers]]
    # Decode needs the decode shape; without a sequence shape there is no new-mod row.
    assert not [i for i in plan(SOFTMAX_OPS, ("S1",), CANONICAL, "triton") if i.section == "decode"]
    assert [i.op_key for i in plan(SOFTMAX_OPS, ("decode",), CANONICAL, "triton")] == ["softmax_decode"] * 4
    assert set(SOFTMAX_OPS) <= set(OP_KEYS)


def test_pairings_carry_the_floors_of_issue_6():
    floors = {(p.ours_op, p.peer_label): dict(p.floors) for p in pairings(SOFTMAX_OPS) if p.floors}
    assert floors == {
        ("softmax_causal", "flex (compiled)"): {"fwd": 1.1, "fwd_bwd": 1.1},
        ("softmax_causal", "sdpa cudnn"): {"fwd": 0.8},
        ("softmax_window", "flex (compiled)"): {"fwd": 1.1, "fwd_bwd": 1.1},
        ("softmax_alibi", "flex (compiled)"): {"fwd": 1.1},
        ("softmax_decode", "sdpa (default)"): {"fwd": 0.9},
    }
    # Every peer of every op is paired, with or without a floor.
    assert len(pairings(SOFTMAX_OPS)) == 3 + 1 + 1 + 3


def test_rows_count_the_visible_pairs_and_mark_what_is_timed():
    causal = blank_row(Item("sequence", "softmax_causal", "flex (compiled)", "S1"), CANONICAL)
    assert causal.flops_fwd == flops.softmax_flops(8, 4096, 16, 128, 128)
    assert causal.flops_fwd_bwd == 3.5 * causal.flops_fwd and causal.fwd_bwd_status == "not run"
    window = blank_row(Item("sequence", "softmax_window", "ours (triton)", "S2"), CANONICAL)
    assert window.dims["window"] == 1024 and window.flops_fwd == flops.softmax_flops(1, 32768, 16, 128, 128, window=1024)
    alibi = blank_row(Item("sequence", "softmax_alibi", "ours (triton)", "S1"), CANONICAL)
    assert alibi.fwd_bwd_status == "n/a" and alibi.flops_fwd_bwd is None
    new_mod = blank_row(Item("sequence", "softmax_new_mod", "ours (triton)", "S1"), CANONICAL)
    assert new_mod.first_call_limit_s == 30.0 and causal.first_call_limit_s is None
    decode = blank_row(Item("decode", "softmax_decode", "sdpa (default)", "B=64"), CANONICAL)
    assert decode.dims == dict(B=64, T=1, H=16, K=128, V=128, L=32768)
    assert decode.floor_ms == pytest.approx(flops.softmax_decode_bytes(64, 32768, 16, 128, 128) / 4.24e12 * 1e3)


def test_targets_judge_floors_and_first_call_limits():
    common = dict(section="sequence", op_key="softmax_causal", op="softmax causal", dims={}, fwd_bwd_status="ok")
    rows = [Row(runner="ours (triton)", ours=True, shape="S1", fwd_ms=1.0, fwd_bwd_ms=4.0, **common),
            Row(runner="flex (compiled)", ours=False, shape="S1", fwd_ms=1.2, fwd_bwd_ms=4.0, **common),
            Row(section="sequence", op_key="softmax_new_mod", op="new score_mod", runner="ours (triton)", ours=True,
                shape="S1", dims={}, first_call_fwd_s=12.0, first_call_fwd_bwd_s=31.0, first_call_limit_s=30.0)]
    causal = [p for p in pairings(("softmax_causal",)) if p.peer_label == "flex (compiled)"]
    ratios = compute_ratios(rows, causal)
    assert ratios[0]["floor_fwd"] == 1.1 and ratios[0]["fwd"] == pytest.approx(1.2)
    verdicts = {(t["what"], t["shape"]): t["met"] for t in targets(rows, ratios)}
    assert verdicts == {
        ("softmax causal vs flex (compiled) fwd", "S1"): True,  # 1.2 >= 1.1
        ("softmax causal vs flex (compiled) fwd+bwd", "S1"): False,  # 1.0 < 1.1
        ("new score_mod ours (triton): first fwd call", "S1"): True,
        ("new score_mod ours (triton): first fwd+bwd call", "S1"): False,
    }
    table = format_tables(rows, ratios)
    assert "targets" in table and "MISSED" in table and "1.1/1.1" in table


# ----------------------------------------------------------------------------- peers

def _gate_case(op_key: str, shape: str = "S1"):
    class Session:
        shapes, device = QUICK, torch.device("cpu")
    return WorkerInputs(Session()).gate_case(Item("sequence" if op_key != "softmax_decode" else "decode", op_key,
                                                  "ours (reference)", shape))


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("op_key", ["softmax_causal", "softmax_window", "softmax_alibi"])
def test_flex_computes_the_same_function_as_attnforms(op_key):
    # Eager Flex (the benchmark compiles it, on CUDA): its block mask, window and the
    # shared ALiBi score_mod against the float64 reference at the quick gate size.
    case = _gate_case(op_key)
    exp = expected(case.reference, case.inputs, case.results, case.grad_names)
    op = OPS[op_key]
    runner = flex(torch.device("cpu"), window=QUICK.softmax.window if op.window else None,
                  score_mod=score_mod_factory(op.score), compiled=False)
    result = check(runner, exp)
    assert result.forward_ok, result.checks
    if op.backward:  # eager Flex has no backward on a CPU; the gate records the refusal
        assert result.backward == "ok" or "backward on CPU" in result.backward, result.backward
    else:
        assert result.backward == "not checked"


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

def test_a_flex_without_the_window_fails_the_window_gate():
    case = _gate_case("softmax_window")
    exp = expected(case.reference, case.inputs, case.results, case.grad_names)
    assert not check(flex(torch.device("cpu"), window=None, score_mod=None, compiled=False), exp).forward_ok


def test_sdpa_computes_causal_attention_and_decoding_over_the_cache():
    case = _gate_case("softmax_causal")
    exp = expected(case.reference, case.inputs, case.results, case.grad_names)
    result = check(sdpa(None, torch.device("cpu")), exp)
    assert result.forward_ok and result.backward == "ok", result.checks
    case = _gate_case("softmax_decode", "B=3")
    assert case.inputs["cache_k"].shape == (3, QUICK.softmax.decode_gate_cache, 2, 32)
    exp = expected(case.reference, case.inputs, case.results, case.grad_names)
    assert check(sdpa_decode(None, torch.device("cpu")), exp).forward_ok


def test_unavailable_peers_say_why():
    cpu = torch.device("cpu")
    for runner in (sdpa("flash", cpu), sdpa("cudnn", cpu), sdpa_decode("cudnn", cpu),
                   flex(cpu, window=None, score_mod=None)):
        assert runner.fn is None and runner.unavailable.startswith("unavailable: ")
        assert "CUDA only" in runner.unavailable


def test_softmax_peer_labels_match_their_items():
    for item in plan(SOFTMAX_OPS, ("S1", "decode"), QUICK, "reference"):
        runner = make_runner(item, "reference", "cpu", QUICK)
        assert runner.label == item.runner
        assert runner.is_ours == item.runner.startswith("ours")


def test_inputs_are_reproducible_and_laid_out_as_documented():
    a, b = sequence_inputs(2, 5, 3, 4, 6, "cpu", seed=1), sequence_inputs(2, 5, 3, 4, 6, "cpu", seed=1)
    assert all(torch.equal(a[n], b[n]) for n in a) and a["v"].shape == (2, 5, 3, 6) and a["q"].dtype == torch.bfloat16
    cache = decode_inputs(2, 7, 3, 4, 4, "cpu", seed=0)
    assert cache["positions"].tolist() == [list(range(7))] * 2 and cache["next_position"].tolist() == [7, 7]


# ----------------------------------------------------------------------------- new mod

def _mod_key(mod) -> str:
    from attnforms.ops.softmax.triton import modc

    return modc.structure(modc.trace(mod, "score"))


def test_the_new_mod_is_one_per_process_and_unseen_by_other_processes():
    assert new_score_mod() is new_score_mod()
    here = _mod_key(new_score_mod())
    code = ("from attnforms.bench.softmax import new_score_mod; from attnforms.ops.softmax.triton import modc; "
            "print(modc.structure(modc.trace(new_score_mod(), 'score')))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other and other != here  # another kernel module, another Triton source


# ----------------------------------------------------------------------------- end to end

def test_quick_softmax_bench_runs_end_to_end_on_cpu(tmp_path, one_thread):
    assert main(["bench", "--quick", "--impl", "reference", "--device", "cpu", "--out", str(tmp_path),
                 "--ops", ",".join(SOFTMAX_OPS), "--shapes", "S1,S2,decode"]) == 0
    payload = json.loads(next(tmp_path.glob("*-cpu.json")).read_text())
    rows = payload["rows"]
    assert rows[0]["op_key"] == "softmax_new_mod" and rows[0]["first_call_fwd_s"] > 0
    assert rows[0]["first_call_fwd_bwd_s"] > 0 and rows[0]["first_call_limit_s"] == 30.0
    ours = [r for r in rows if r["ours"]]
    assert len(ours) == 1 + 1 + 3 * 2
    assert all(r["status"] == "ok" and all(c["passed"] for c in r["gate"].values()) for r in ours)
    # Gates at the reduced sizes of SoftmaxSizes: B = 2, T = min(T, 128), for S1 and S2 alike.
    s2 = next(r for r in ours if r["op_key"] == "softmax_causal" and r["shape"] == "S2")
    assert s2["gate_shapes"]["q"] == [2, 128, 2, 32] and (s2["dims"]["B"], s2["dims"]["T"]) == (1, 256)
    decode = next(r for r in ours if r["section"] == "decode")
    assert decode["gate_shapes"]["cache_k"] == [3, 40, 2, 32] and decode["dims"]["L"] == 80
    # Peers that cannot run on a CPU are rows saying why; SDPA's default runs (math).
    peers = {(r["op_key"], r["runner"], r["shape"]): r["status"] for r in rows if not r["ours"]}
    assert peers[("softmax_decode", "sdpa (default)", "B=3")] == "ok"
    assert all(status.startswith("unavailable") for (_, runner, _), status in peers.items()
               if runner != "sdpa (default)")
    assert next(e for e in payload["ratios"] if e["pairing"] == "softmax decode vs sdpa (default)")["fwd"] > 0
    assert {t["target"] for t in payload["targets"]} == {">= 1.1x", ">= 0.8x", ">= 0.9x", "<= 30 s"}
    assert payload["softmax"]["window"] == QUICK.softmax.window


def test_quick_softmax_bench_gates_our_triton_kernels(tmp_path, one_thread):
    # Our flash, split-KV decode and new-mod kernels under the interpreter (set by the
    # conftest), through the gate the GPU run uses: outputs and gradients in the bound.
    assert main(["bench", "--quick", "--impl", "triton", "--device", "cpu", "--out", str(tmp_path),
                 "--ops", "softmax_causal,softmax_alibi,softmax_new_mod,softmax_decode", "--shapes", "S1,decode",
                 "--warmup-workers", "0"]) == 0
    payload = json.loads(next(tmp_path.glob("*-cpu.json")).read_text())
    ours = [r for r in payload["rows"] if r["ours"]]
    assert [r["op_key"] for r in ours] == ["softmax_new_mod", "softmax_decode", "softmax_causal", "softmax_alibi"]
    assert all(r["status"] == "ok" and all(c["passed"] for c in r["gate"].values()) for r in ours)
    assert {name for r in ours for name in r["gate"]} == {"output", "dq", "dk", "dv"}
    assert [r["fwd_bwd_status"] for r in ours] == ["ok", "n/a", "ok", "n/a"]
