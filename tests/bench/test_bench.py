"""The benchmark harness on the CPU: FLOP and byte counts against hand counts, the
correctness gate, the report files, and `attnforms bench --quick` end to end.
No test asserts a timing."""
import importlib.util
import json
import os
import time

import pytest
import torch

import attnforms as af
from attnforms.bench import flops
from attnforms.bench.gate import check, expected
from attnforms.bench.measure import Session, measure
from attnforms.bench.peers import Runner
from attnforms.bench.report import (
    WRONG_TIMED, Pairing, Row, compute_ratios, format_tables, targets, write_json, write_png,
)
from attnforms.bench.shapes import shape_set
from attnforms.bench.timing import TimingSettings
from attnforms.cli import main
from attnforms.testing import gated_delta_inputs


# ----------------------------------------------------------------------------- counts

def test_gated_delta_flops_match_a_hand_count():
    # One head, C = 2, K = 2, V = 3, two chunks. Per chunk without beta:
    # Q Kᵀ 2·2²·2 = 16, scores·V 2·2²·3 = 24, Q S and Kᵀ U 2·(2·2·2·3) = 48 -> 88.
    assert flops.gated_delta_flops(1, 4, 1, 2, 3, beta=False, C=2) == 2 * 88
    # With beta, per chunk also: K Kᵀ 16, W 16, U 24, W S 24, triangular inverse 2³/3.
    assert flops.gated_delta_flops(1, 4, 1, 2, 3, beta=True, C=2) == pytest.approx(2 * (88 + 80 + 8 / 3))
    # Batch and heads multiply; a partial last chunk counts as a whole one (T = 5: 3 chunks).
    assert flops.gated_delta_flops(2, 5, 3, 2, 3, beta=False, C=2) == 2 * 3 * 3 * 88
    # mLSTM: linear attention plus the normaliser's 4·C·K = 16 per chunk.
    assert flops.mlstm_flops(1, 4, 1, 2, 3, C=2) == 2 * (88 + 16)
    assert flops.fwd_bwd_flops(100.0) == 300.0


def test_byte_counts_match_a_hand_count():
    # B=1, T=2, H=1, K=2, V=3: q, k 2·2 each, v and o 2·3 each = 20 elements.
    assert flops.sequence_bytes(1, 2, 1, 2, 3, gate="none", beta=False) == 20 * 2
    assert flops.sequence_bytes(1, 2, 1, 2, 3, gate="scalar", beta=True) == (20 + 2 + 2) * 2
    assert flops.sequence_bytes(1, 2, 1, 2, 3, gate="channel", beta=False, itemsize=4) == (20 + 4) * 4
    assert flops.sequence_bytes(1, 2, 1, 2, 3, gate="mlstm", beta=False) == (20 + 4) * 2
    # Decode state: S [2, 3, 4, 5] float32 read and written once.
    assert flops.decode_state_bytes(2, 3, 4, 5) == 2 * 2 * 3 * 4 * 5 * 4


def test_floors_match_the_numbers_in_benchmarks_md():
    # "At B = 256 the floor is about 127 µs"; S1's q, k, v, o in bf16 are 537 MB.
    assert flops.floor_seconds(flops.decode_state_bytes(256, 16, 128, 128)) * 1e6 == pytest.approx(126.6, abs=0.1)
    assert flops.sequence_bytes(8, 4096, 16, 128, 128, gate="none", beta=False) == pytest.approx(537e6, rel=1e-3)
    assert flops.tflops(2e12, 1000.0) == pytest.approx(2.0)
    assert flops.tflops(1.0, None) is None


# ----------------------------------------------------------------------------- gate

def _gdn(q, k, v, g, beta):
    return af.gated_deltanet(q, k, v, g, beta, form="chunk", impl="reference").output


@pytest.fixture
def gdn_expected():
    inputs = gated_delta_inputs(2, 40, 2, 16, 8, gate="scalar", dtype=torch.bfloat16)
    return expected(_gdn, inputs, ("output",), ("q", "k", "v", "g", "beta"))


def _with_backward(backward):
    """An identity whose backward is `backward(grad)` (a peer whose gradient is not its
    forward's, or that has none)."""

    class Identity(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return backward(grad)

    return Identity.apply


def _gradient_times(factor: float):
    """An identity whose backward multiplies the gradient by `factor`."""
    return _with_backward(lambda grad: grad * factor)


def _cpu_session() -> Session:
    """A bench session on the CPU with the shortest timings."""
    return Session(device=torch.device("cpu"), impl="reference", shapes=shape_set(True),
                   settings=TimingSettings(warmup_ms=1.0, rep_ms=1.0), deadline=time.time() + 600,
                   log=lambda line: None)


def test_gate_passes_the_reference_and_a_head_major_runner(gdn_expected):
    assert check(Runner("same", _gdn), gdn_expected).backward == "ok"

    def head_major(q, k, v, g, beta):  # a peer with a [B, H, T, D] layout
        moved = [x.transpose(1, 2) for x in (q, k, v, g, beta)]
        return _gdn(*moved).transpose(1, 2)

    result = check(Runner("head-major", head_major, head_major=True), gdn_expected)
    assert result.forward_ok and result.backward == "ok", result.checks
    assert set(result.checks) == {"output", "dq", "dk", "dv", "dg", "dbeta"}


def test_gate_reports_wrong_outputs_and_gradients_and_refusals(gdn_expected):
    wrong = check(Runner("off", lambda **kw: _gdn(**kw) * 1.05, is_ours=True), gdn_expected)
    assert not wrong.forward_ok and "output" in wrong.failures()
    # Peers are held to a looser bound, but a convention mismatch is still caught.
    mismatch = check(Runner("peer off", lambda **kw: _gdn(**kw) * 1.5), gdn_expected)
    assert not mismatch.forward_ok

    result = check(Runner("bad grad", lambda **kw: _gradient_times(1.5)(_gdn(**kw))), gdn_expected)
    assert result.forward_ok and result.backward == "WRONG"

    def no_backward(grad):
        raise NotImplementedError("no backward yet")

    result = check(Runner("no bwd", lambda **kw: _with_backward(no_backward)(_gdn(**kw))), gdn_expected)
    assert result.forward_ok and result.backward.startswith("refused: NotImplementedError")


def test_a_peer_outside_the_gate_is_timed_forward_only_and_ours_is_not(gdn_expected):
    """The issues ask for ratios against peers that round more than the gate allows
    (mlstm_kernels' step kernel): their forward is timed and marked; ours never is."""
    session = _cpu_session()
    rows = {}
    for ours in (True, False):
        row = Row(section="sequence", op_key="gdn", op="GDN", runner="off", ours=ours, shape="S1", dims={})
        measure(session, Runner("off", lambda **kw: _gdn(**kw) * 1.5, is_ours=ours), row, gdn_expected.inputs,
                gdn_expected)
        rows[ours] = row
    assert rows[True].status == "WRONG" and rows[True].fwd_ms is None
    assert rows[False].status == WRONG_TIMED and rows[False].fwd_ms > 0
    assert rows[False].fwd_bwd_ms is None and rows[False].fwd_bwd_status.startswith("not run")
    mine = Row(section="sequence", op_key="gdn", op="GDN", runner="ours", ours=True, shape="S1", dims={},
               fwd_ms=rows[False].fwd_ms / 2, fwd_bwd_status="ok")
    ratios = compute_ratios([mine, rows[False]], [Pairing("GDN vs off", "gdn", "gdn", "off", (("fwd", 1.5),))])
    assert ratios[0]["fwd"] == pytest.approx(2.0) and ratios[0]["peer_failed_gate"]
    goal, = targets([mine, rows[False]], ratios)
    assert goal["met"] and goal["caveat"] == "the peer failed the gate"
    assert "met (the peer failed the gate)" in format_tables([mine, rows[False]], ratios)


def test_a_peer_backward_outside_the_gate_is_timed_and_marked_and_ours_is_not(gdn_expected):
    """A peer whose gradients miss the bound (TFLA's df in bf16) is timed forward +
    backward and its ratio carries the caveat; ours with the same fault is not timed."""
    session = _cpu_session()
    rows = {}
    for ours in (True, False):
        row = Row(section="sequence", op_key="gdn", op="GDN", runner="off", ours=ours, shape="S1", dims={})
        runner = Runner("off", lambda **kw: _gradient_times(1.5)(_gdn(**kw)), is_ours=ours)
        measure(session, runner, row, gdn_expected.inputs, gdn_expected)
        rows[ours] = row
    assert rows[True].status == "ok" and rows[True].fwd_bwd_status == "WRONG" and rows[True].fwd_bwd_ms is None
    peer = rows[False]
    assert peer.status == "ok" and peer.fwd_bwd_status == WRONG_TIMED and peer.fwd_bwd_ms > 0
    mine = Row(section="sequence", op_key="gdn", op="GDN", runner="ours", ours=True, shape="S1", dims={},
               fwd_ms=peer.fwd_ms, fwd_bwd_ms=peer.fwd_bwd_ms / 2, fwd_bwd_status="ok")
    ratios = compute_ratios([mine, peer], [Pairing("GDN vs off", "gdn", "gdn", "off", (("fwd_bwd", 1.5),))])
    assert ratios[0]["fwd_bwd"] == pytest.approx(2.0) and ratios[0]["peer_backward_failed_gate"]
    assert ratios[0]["why_missing"] is None
    goal, = targets([mine, peer], ratios)
    assert goal["met"] and goal["caveat"] == "the peer's gradients failed the gate"
    table = format_tables([mine, peer], ratios)
    assert "met (the peer's gradients failed the gate)" in table and "dq err" in table


@pytest.mark.parametrize("gate", ["exp", "sigmoid"])
def test_held_normaliser_convention_has_the_mlstm_value_and_another_gradient(gate):
    """bench/conventions.py (TFLA's gradient): the mLSTM's value; dv, which the
    normaliser does not touch, the exact one; dq not (tests/ops/test_mlstm.py checks
    that gradient against a direct formula)."""
    from attnforms.bench.conventions import mlstm_held_normaliser
    from attnforms.testing import mlstm_inputs

    x = mlstm_inputs(1, 40, 2, 8, 8, dtype=torch.float64)
    upstream = torch.randn(1, 40, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def grads(fn):
        leaves = {n: t.clone().requires_grad_() for n, t in x.items()}
        out = fn(**leaves)
        out.backward(upstream)
        return out.detach(), {n: t.grad for n, t in leaves.items()}

    held_value, held = grads(lambda **kw: mlstm_held_normaliser(**kw, input_gate=gate))
    exact_value, exact = grads(lambda **kw: af.mlstm(**kw, input_gate=gate, impl="reference").output)
    torch.testing.assert_close(held_value, exact_value, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(held["v"], exact["v"], rtol=1e-9, atol=1e-9)
    assert (held["q"] - exact["q"]).abs().max() > 1e-3 * exact["q"].abs().max()


def test_gate_checks_a_peer_backward_against_its_gradient_convention(gdn_expected):
    """A peer whose backward is another function's gradient (peers.Runner.gradient_of):
    WRONG against the op's gradient, ok against that function's, and said so."""

    peer = lambda **kw: _gradient_times(0.5)(_gdn(**kw))  # noqa: E731
    halved = lambda **kw: 0.5 * _gdn(**kw) + (0.5 * _gdn(**kw)).detach()  # noqa: E731
    assert check(Runner("peer", peer), gdn_expected).backward == "WRONG"
    result = check(Runner("peer", peer, gradient_of=("half the gradient", halved)), gdn_expected)
    assert result.forward_ok and result.backward == "ok" and result.gradient_of == "half the gradient"
    row = Row(section="sequence", op_key="gdn", op="GDN", runner="peer", ours=False, shape="S1", dims={})
    measure(_cpu_session(), Runner("peer", peer, gradient_of=("half the gradient", halved)), row, gdn_expected.inputs,
            gdn_expected)
    assert row.fwd_bwd_status == "ok" and row.fwd_bwd_ms > 0 and row.gradient_of == "half the gradient"
    mine = Row(section="sequence", op_key="gdn", op="GDN", runner="ours", ours=True, shape="S1", dims={},
               fwd_ms=row.fwd_ms, fwd_bwd_ms=row.fwd_bwd_ms / 2, fwd_bwd_status="ok")
    ratios = compute_ratios([mine, row], [Pairing("GDN vs peer", "gdn", "gdn", "peer", (("fwd_bwd", 1.5),))])
    goal, = targets([mine, row], ratios)
    assert goal["measured"] == pytest.approx(2.0) and goal["caveat"] == "the peer's half the gradient"
    table = format_tables([mine, row], ratios)
    assert "backward: half the gradient" in table and "(the peer's half the gradient)" in table
    # Ours computing the same gradient (linear.SequenceOp.gradient_of): like for like.
    mine.gradient_of = "half the gradient"
    ratios = compute_ratios([mine, row], [Pairing("GDN vs peer", "gdn", "gdn", "peer", (("fwd_bwd", 1.5),))])
    goal, = targets([mine, row], ratios)
    assert goal["caveat"] is None and ratios[0]["peer_gradient_of"] is None


# ----------------------------------------------------------------------------- report

def _rows():
    common = dict(section="sequence", op_key="kda", op="KDA", dims=dict(B=1, T=64, H=1, K=8, V=8))
    return [
        Row(runner="ours (triton)", ours=True, shape="S1", fwd_ms=1.0, fwd_bwd_ms=4.0, fwd_bwd_status="ok", **common),
        Row(runner="peer", ours=False, shape="S1", fwd_ms=2.0, fwd_bwd_status="refused: RuntimeError: no",
            gate={"output": dict(error=float("nan"), eager_error=0.1, bound=0.2, passed=False)}, **common),
        Row(runner="ours (triton)", ours=True, shape="S2", status="WRONG", fwd_bwd_status="not run", **common),
        Row(runner="peer", ours=False, shape="S2", fwd_ms=3.0, fwd_bwd_ms=9.0, fwd_bwd_status="ok", **common),
    ]


def test_ratios_are_peer_over_ours_and_say_why_missing():
    ratios = compute_ratios(_rows(), [Pairing("KDA vs peer", "kda", "kda", "peer")])
    s1, s2 = ratios
    assert (s1["shape"], s1["fwd"], s1["fwd_bwd"]) == ("S1", 2.0, None)
    assert "refused" in s1["why_missing"]
    assert s2["fwd"] is None and "WRONG" in s2["why_missing"]
    table = format_tables(_rows(), ratios)
    assert "KDA vs peer" in table and "refused" in table


def test_decode_table_gives_the_graph_time_or_why_it_is_missing():
    common = dict(section="decode", op_key="gdn_decode", op="GDN decode", dims=dict(B=1, T=1, H=1, K=8, V=8),
                  shape="B=1", bytes_floor=512.0, floor_ms=1e-4)
    rows = [Row(runner="ours (triton)", ours=True, fwd_ms=0.0412, graph_ms=0.0063, **common),
            Row(runner="peer", ours=False, fwd_ms=0.0549, graph_status="failed: RuntimeError: capture", **common)]
    lines = format_tables(rows, []).splitlines()
    ours = next(line for line in lines if line.startswith("GDN decode") and "ours" in line)
    peer = next(line for line in lines if line.startswith("GDN decode") and "peer" in line)
    assert "41.2" in ours and "6.3" in ours
    assert "54.9" in peer and "x [1]" in peer
    assert any(line.startswith("[1] peer: failed: RuntimeError: capture") for line in lines)


def test_report_writes_valid_json_and_a_png(tmp_path):
    rows = _rows()
    ratios = compute_ratios(rows, [Pairing("KDA vs peer", "kda", "kda", "peer")])
    path = tmp_path / "nested" / "r.json"
    write_json(path, dict(rows=rows, ratios=ratios, inf=float("inf")))
    loaded = json.loads(path.read_text())  # strict JSON: NaN and inf became strings
    assert loaded["rows"][1]["gate"]["output"]["error"] == "nan"
    assert loaded["rows"][0]["fwd_bwd_ms"] == 4.0 and loaded["inf"] == "inf"
    for name, shown in (("ratios.png", ratios), ("empty.png", [])):
        assert write_png(tmp_path / name, shown, "title") is None
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- end to end

def test_quick_bench_runs_end_to_end_on_cpu(tmp_path, one_thread, capsys):
    assert main(["bench", "--quick", "--impl", "reference", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ratios: peer time / our time" in out
    (json_path,) = tmp_path.glob("*-cpu.json")
    assert json_path.with_suffix(".png").exists()
    payload = json.loads(json_path.read_text())
    assert payload["complete"] and payload["device"] == "cpu"
    assert set(payload["ceilings"]["constants"]) == {"matmul_flops_per_s", "copy_bytes_per_s"}
    ours = [r for r in payload["rows"] if r["ours"]]
    # Linear: 9 ops (the mLSTM twice with TFLA's gradient) x 3 shapes + 2 decode steps x
    # 2 batches; softmax: 3 ops x 3 shapes, the new mod once, decode at one batch size;
    # every one gated and timed.
    assert len(ours) == 31 + 11
    assert all(r["status"] == "ok" and r["fwd_ms"] is not None for r in ours)
    assert all(r["fwd_bwd_ms"] is not None for r in ours if r["fwd_bwd_status"] != "n/a")
    assert {r["op_key"] for r in ours if r["section"] == "sequence" and r["fwd_bwd_ms"] is None} == {"softmax_alibi"}
    assert all(all(c["passed"] for c in r["gate"].values()) for r in ours)
    assert {r["op"] for r in ours} == {"KDA", "GDN", "simple GLA", "GLA", "mLSTM exp", "mLSTM sig",
                                       "mLSTM exp held", "mLSTM sig held", "Aaren",
                                       "GDN decode", "mLSTM decode", "softmax causal", "softmax window",
                                       "softmax ALiBi", "new score_mod", "softmax decode"}
    peers = [r for r in payload["rows"] if not r["ours"]]
    if importlib.util.find_spec("fla") is None:
        assert all(r["status"].startswith("unavailable") for r in peers if r["runner"].startswith("fla"))
    assert payload["ratios"] and all(e["why_missing"] for e in payload["ratios"] if e["fwd"] is None)
    held = [r for r in ours if r["op"].endswith("held")]
    assert held and all(r["gradient_of"] == "gradient with the normaliser held constant" for r in held)


def test_quick_bench_gates_our_triton_kernels_forward_and_backward(tmp_path, one_thread):
    # The Triton kernels under the interpreter (set by the conftest), through the same
    # gate the GPU run uses: bf16 outputs and every gradient within the noise bound.
    assert main(["bench", "--quick", "--impl", "triton", "--device", "cpu", "--out", str(tmp_path),
                 "--ops", "kda,gdn", "--warmup-workers", "0"]) == 0
    payload = json.loads(next(tmp_path.glob("*-cpu.json")).read_text())
    ours = [r for r in payload["rows"] if r["ours"]]
    assert {r["op"] for r in ours} == {"KDA", "GDN", "GDN decode"}
    assert all(r["status"] == "ok" for r in ours)
    assert all(r["fwd_bwd_ms"] is not None for r in ours if r["section"] == "sequence")
    assert all(all(c["passed"] for c in r["gate"].values()) for r in ours)


def test_bench_options_are_checked():
    with pytest.raises(SystemExit):
        main(["bench", "--ops", "kda,nonsense"])
    with pytest.raises(SystemExit):
        main(["bench", "--shapes", "S4"])


# ----------------------------------------------------------------------------- workers

def _crashing_worker(conn, config, items):
    """A worker body that dies on the second implementation, as a compiler abort would."""
    from dataclasses import asdict

    from attnforms.bench.cases import blank_row
    from attnforms.bench.shapes import shape_set

    for item in items:
        conn.send(("start", item))
        if item.runner == "crasher":
            os._exit(3)
        row = blank_row(item, shape_set(True))
        row.fwd_ms = 1.0
        conn.send(("row", item, asdict(row)))
    conn.send(("done",))


def test_a_dead_worker_costs_only_its_implementation(tmp_path):
    from attnforms.bench.cases import blank_row
    from attnforms.bench.family import Item
    from attnforms.bench.shapes import shape_set
    from attnforms.bench.timing import TimingSettings
    from attnforms.bench.workers import WorkerConfig, measure_items

    items = [Item("sequence", "gdn", runner, shape) for shape in ("S1", "S2") for runner in ("ours (x)", "crasher", "other")]
    config = WorkerConfig(device="cpu", impl="reference", quick=True, settings=TimingSettings(), deadline=time.time() + 60,
                          start=time.time(), threads=1)
    rows = []
    measure_items(config, items, lambda item: blank_row(item, shape_set(True)), rows.append, log=lambda _: None,
                  target=_crashing_worker)
    outcome = {(r.runner, r.shape): r.status for r in rows}
    assert len(rows) == len(items)
    assert outcome[("crasher", "S1")].startswith("failed: the worker process died (exit code 3)")
    assert outcome[("crasher", "S2")].startswith("skipped: this implementation killed a worker")
    assert all(outcome[(runner, shape)] == "ok" for runner in ("ours (x)", "other") for shape in ("S1", "S2"))


def test_peer_labels_match_their_registry_keys():
    from attnforms.bench.peers import DECODE_PEERS, SEQUENCE_PEERS

    factories = {**DECODE_PEERS, **{label: make for peers in SEQUENCE_PEERS.values() for label, make in peers.items()}}
    for label, make in factories.items():
        runner = make()
        assert runner.label == label
        assert (runner.fn is None) == (runner.unavailable is not None)


def test_every_linear_floor_names_a_pairing_the_bench_makes():
    """A typo in a floor's op key or peer label would drop the target silently."""
    from attnforms.bench import linear

    made = {(p.ours_op, p.peer_label): dict(p.floors) for p in linear.pairings(linear.OP_KEYS)}
    for key, floors in linear.FLOORS.items():
        assert made.get(key) == dict(floors), key
    assert made[("gdn", "mlstm_kernels triton_xl_chunk")] == {"fwd_bwd": 1.0}


def test_warm_up_reports_first_calls_and_unavailable_peers(one_thread):
    from attnforms.bench.linear import plan
    from attnforms.bench.shapes import QUICK
    from attnforms.bench.timing import TimingSettings
    from attnforms.bench.workers import WorkerConfig, warm_up

    items = plan(("gdn",), ("S1", "S2"), QUICK, "reference")
    config = WorkerConfig(device="cpu", impl="reference", quick=True, settings=TimingSettings(), deadline=time.time() + 60,
                          start=time.time(), threads=1)
    results = warm_up(config, items, processes=2, log=lambda _: None)
    assert set(results) == {("sequence", "gdn", "ours (reference)"), ("sequence", "gdn", "fla chunk_gated_delta_rule")}
    ours = results[("sequence", "gdn", "ours (reference)")]
    assert ours["fwd_s"] > 0 and ours["fwd_bwd_s"] > 0
    if importlib.util.find_spec("fla") is None:
        assert results[("sequence", "gdn", "fla chunk_gated_delta_rule")]["error"].startswith("unavailable")
