"""Result rows, ratios against peers, the printed tables, and the JSON and PNG files.

A ratio is `peer time / our time` for the same op and shape in the same run (above 1:
ours is faster). It exists only where both sides passed the correctness gate and were
timed; a missing side is shown as "-". A pairing may carry the floors an issue sets for
its ratios, and a row a limit on its first-call time; `targets` lists each with the
measured value and whether it is met.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path


# A peer's status when it failed the forward gate and was timed anyway (measure.py).
WRONG_TIMED = "WRONG, timed"


@dataclass
class Row:
    """One implementation of one op at one shape.

    status: "ok" (gated and timed), "WRONG" (failed the gate, not timed), WRONG_TIMED
            (a peer that failed the gate, its forward timed anyway), "unavailable: ...",
            "failed: ...", or "skipped: ...".
    fwd_bwd_status: "ok", "WRONG" (ours: not timed), WRONG_TIMED (a peer's backward
            outside the bound, timed anyway), "refused: ...", "failed: ...",
            "skipped: ...", "not run" (the forward was not ok) or "n/a" (decode has
            no backward).
    Times are medians in ms at the full shape; `peak_*_bytes` are the peak allocations of
    one call above what was allocated before it; `first_call_*_s` are the wall times of
    the gate's calls (at `gate_T` tokens): at the first shape of a run these are the
    process's first calls, JIT compilation and autotuning included.
    """

    section: str  # "sequence" | "decode"
    op_key: str
    op: str
    runner: str
    ours: bool
    shape: str
    dims: dict
    status: str = "ok"
    fwd_ms: float | None = None
    fwd_bwd_ms: float | None = None
    fwd_bwd_status: str = "n/a"
    flops_fwd: float | None = None
    flops_fwd_bwd: float | None = None
    tflops_fwd: float | None = None
    tflops_fwd_bwd: float | None = None
    bytes_floor: float | None = None  # least HBM bytes of one forward (decode: state read + write)
    floor_ms: float | None = None  # bytes_floor at the copy-bandwidth ceiling (flops.H200's constant)
    floor_here_ms: float | None = None  # bytes_floor at the copy bandwidth measured in this run, on this GPU
    achieved_bytes_per_s: float | None = None  # bytes_floor / fwd time
    graph_ms: float | None = None  # decode on CUDA: one step replayed from a CUDA graph (no host overhead)
    graph_status: str | None = None  # why graph_ms is missing, where it was tried
    peak_fwd_bytes: int | None = None
    peak_fwd_bwd_bytes: int | None = None
    first_call_fwd_s: float | None = None
    first_call_fwd_bwd_s: float | None = None
    first_call_limit_s: float | None = None  # a target on the first calls (each must be under it)
    gate_T: int | None = None
    gradient_of: str | None = None  # where the backward is another function's gradient (peers.Runner)
    gate_shapes: dict = field(default_factory=dict)  # input name -> shape at which the gate ran
    gate: dict = field(default_factory=dict)


RATIO_KINDS = ("fwd", "fwd_bwd")


@dataclass(frozen=True)
class Pairing:
    """Our `ours_op` against the peer `peer_label` that runs for `peer_op`. floors:
    `(("fwd", 1.1), ...)`, the least ratio an issue asks for, by kind (fwd, fwd_bwd)."""

    name: str
    ours_op: str
    peer_op: str
    peer_label: str
    floors: tuple[tuple[str, float], ...] = ()


def compute_ratios(rows: list[Row], pairings: list[Pairing]) -> list[dict]:
    """`peer / ours` for fwd and fwd+bwd, per pairing and shape where either side ran,
    with the pairing's floors (`floor_fwd`, `floor_fwd_bwd`: None where it has none);
    `peer_failed_gate`: the peer's time is that of a result outside the gate's bound;
    `peer_backward_failed_gate`: its forward + backward time is that of gradients
    outside the bound;
    `peer_gradient_of`: what the peer's backward computes where it is not the gradient
    ours computes (its forward + backward ratio compares different work)."""
    ratios = []
    for pairing in pairings:
        ours = {r.shape: r for r in rows if r.op_key == pairing.ours_op and r.ours}
        peer = {r.shape: r for r in rows if r.op_key == pairing.peer_op and r.runner == pairing.peer_label}
        floors = dict(pairing.floors)
        for shape in [s for s in ours if s in peer]:
            mine, theirs = ours[shape], peer[shape]
            entry = dict(pairing=pairing.name, shape=shape, ours=mine.runner, peer=theirs.runner,
                         fwd=_ratio(theirs.fwd_ms, mine.fwd_ms), fwd_bwd=_ratio(theirs.fwd_bwd_ms, mine.fwd_bwd_ms),
                         **{f"floor_{kind}": floors.get(kind) for kind in RATIO_KINDS},
                         why_missing=_why_missing(mine, theirs), peer_failed_gate=theirs.status == WRONG_TIMED,
                         peer_backward_failed_gate=theirs.fwd_bwd_status == WRONG_TIMED,
                         peer_gradient_of=theirs.gradient_of if theirs.gradient_of != mine.gradient_of else None)
            ratios.append(entry)
    return ratios


def targets(rows: list[Row], ratios: list[dict]) -> list[dict]:
    """Every target of the run: the floor of each ratio that has one, and the limit of
    each first-call time (forward, and forward + backward: the first training step).
    `met` is None where the value was not measured."""
    found = []
    for entry in ratios:
        for kind in RATIO_KINDS:
            floor = entry.get(f"floor_{kind}")
            if floor is not None:
                value = entry[kind]
                found.append(dict(what=f"{entry['pairing']} {kind.replace('_', '+')}", shape=entry["shape"],
                                  measured=value, target=f">= {floor:g}x",
                                  met=None if value is None else value >= floor,
                                  why_missing=entry["why_missing"] if value is None else None,
                                  caveat=_caveat(entry, kind)))
    for row in rows:
        if row.first_call_limit_s is None:
            continue
        for kind, value in (("fwd", row.first_call_fwd_s), ("fwd+bwd", row.first_call_fwd_bwd_s)):
            found.append(dict(what=f"{row.op} {row.runner}: first {kind} call", shape=row.shape,
                              measured=value, target=f"<= {row.first_call_limit_s:g} s",
                              met=None if value is None else value <= row.first_call_limit_s,
                              why_missing=None if value is not None else _short(row.status)))
    return found


def _caveat(entry: dict, kind: str) -> str | None:
    """What qualifies a ratio: the peer failed the gate, or (forward + backward) its
    gradients did, or its backward computes another gradient than ours."""
    if entry.get("peer_failed_gate"):
        return "the peer failed the gate"
    if kind != "fwd_bwd":
        return None
    caveats = []
    if entry.get("peer_backward_failed_gate"):
        caveats.append("the peer's gradients failed the gate")
    if entry.get("peer_gradient_of"):
        caveats.append(f"the peer's {entry['peer_gradient_of']}")
    return "; ".join(caveats) or None


def _ratio(peer_ms, our_ms):
    return None if peer_ms is None or our_ms is None or our_ms <= 0 else peer_ms / our_ms


def _why_missing(mine: Row, theirs: Row) -> str | None:
    reasons = []
    for who, row in (("ours", mine), ("peer", theirs)):
        if row.status != "ok":
            reasons.append(f"{who}: {_short(row.status)}")
        elif row.fwd_bwd_status not in ("ok", "n/a", WRONG_TIMED):
            reasons.append(f"{who} fwd+bwd: {_short(row.fwd_bwd_status)}")
    return "; ".join(reasons) or None


def _short(text: str, width: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _status_cell(status: str) -> str:
    if status.startswith(("unavailable", "skipped", "failed", "refused")):
        return status.split(":")[0]
    return status


def format_tables(rows: list[Row], ratios: list[dict]) -> str:
    """The sequence table, the decode table, the ratios, the targets, and the long
    messages as notes."""
    lines, notes = [], {}

    def note(row: Row, text: str) -> str:
        """A numbered note; rows of one runner with the same message share it."""
        key = f"{row.runner}: {_short(text, 240)}"
        notes.setdefault(key, len(notes) + 1)
        return f"[{notes[key]}]"

    sequence = [r for r in rows if r.section == "sequence"]
    if sequence:
        header = (f"{'op':<16} {'runner':<32} {'shape':<5} {'status':<12} {'fwd ms':>9} {'fwd+bwd ms':>11} "
                  f"{'fwd TF/s':>9} {'f+b TF/s':>9} {'peak MB f/fb':>15} {'1st call s':>11}")
        lines += ["sequence ops (bf16 inputs; TFLOP/s of each op's model count, flops.py: linear ops the chunkwise "
                  "count at C=64, softmax the visible query-key pairs; 1st call: the gate's fwd/fwd+bwd, "
                  "compile and autotune included at the first shape)", header, "-" * len(header)]
        for r in sequence:
            status = _status_cell(r.status) if r.status == "ok" else f"{_status_cell(r.status)} {note(r, _why(r))}"
            fwd_bwd = _num(r.fwd_bwd_ms, ".3f")
            if r.fwd_bwd_ms is not None and r.gradient_of:
                fwd_bwd = f"{fwd_bwd} {note(r, 'backward: ' + r.gradient_of)}"
            if r.fwd_bwd_ms is not None and r.fwd_bwd_status == WRONG_TIMED:
                fwd_bwd = f"{fwd_bwd} {note(r, _gate_text(r))}"
            if r.status == "ok" and r.fwd_bwd_ms is None and r.fwd_bwd_status != "n/a":
                fwd_bwd = f"{_status_cell(r.fwd_bwd_status)} {note(r, r.fwd_bwd_status if r.fwd_bwd_status != 'WRONG' else _gate_text(r))}"
            peak = f"{_mb(r.peak_fwd_bytes)}/{_mb(r.peak_fwd_bwd_bytes)}"
            first = "-" if r.first_call_fwd_s is None else f"{r.first_call_fwd_s:.1f}/{_num(r.first_call_fwd_bwd_s, '.1f')}"
            lines.append(f"{r.op:<16} {_short(r.runner, 32):<32} {r.shape:<5} {status:<12} {_num(r.fwd_ms, '.3f'):>9} "
                         f"{fwd_bwd:>11} {_num(r.tflops_fwd, '.3g'):>9} {_num(r.tflops_fwd_bwd, '.3g'):>9} {peak:>15} {first:>11}")
    decode = [r for r in rows if r.section == "decode"]
    if decode:
        header = (f"{'op':<16} {'runner':<38} {'batch':<7} {'status':<12} {'µs':>9} {'graph µs':>9} {'floor µs':>9} "
                  f"{'TB/s':>11} {'x floor here':>12} {'1st call s':>11}")
        lines += ["", "decode (one token; µs: an eager call, host launch overhead included; graph µs: one step "
                  "replayed from a CUDA graph of 20; floor = the least bytes moved at the H200's copy ceiling: the "
                  "linear families' float32 state read + written, softmax's KV cache read; x floor here: time over "
                  "those bytes at the copy bandwidth measured in this run)", header, "-" * len(header)]
        for r in decode:
            status = _status_cell(r.status) if r.status == "ok" else f"{_status_cell(r.status)} {note(r, _why(r))}"
            us = None if r.fwd_ms is None else r.fwd_ms * 1e3
            floor = None if r.floor_ms is None else r.floor_ms * 1e3
            rate = None if r.achieved_bytes_per_s is None else r.achieved_bytes_per_s / 1e12
            here = None if r.fwd_ms is None or not r.floor_here_ms else r.fwd_ms / r.floor_here_ms
            graph = None if r.graph_ms is None else r.graph_ms * 1e3
            graph_cell = _num(graph, '.1f') if r.graph_status is None else f"x {note(r, r.graph_status)}"
            lines.append(f"{r.op:<16} {_short(r.runner, 38):<38} {r.shape:<7} {status:<12} {_num(us, '.1f'):>9} "
                         f"{graph_cell:>9} {_num(floor, '.3g'):>9} {_num(rate, '.3g'):>11} {_num(here, '.2f'):>12} "
                         f"{_num(r.first_call_fwd_s, '.2f'):>11}")
    if ratios:
        header = f"{'pairing':<44} {'shape':<7} {'fwd':>7} {'fwd+bwd':>8} {'floors':>11}  missing because"
        lines += ["", "ratios: peer time / our time (above 1 = ours faster; floors: the issue's targets, fwd/fwd+bwd)",
                  header, "-" * len(header)]
        for entry in ratios:
            floors = "/".join(_num(entry.get(f"floor_{kind}"), "g") for kind in RATIO_KINDS)
            lines.append(f"{_short(entry['pairing'], 44):<44} {entry['shape']:<7} {_num(entry['fwd'], '.2f'):>7} "
                         f"{_num(entry['fwd_bwd'], '.2f'):>8} {floors if floors != '-/-' else '':>11}  "
                         f"{entry['why_missing'] or ''}")
    goals = targets(rows, ratios)
    if goals:
        header = f"{'target':<58} {'shape':<7} {'measured':>9} {'wanted':>9}  verdict"
        lines += ["", "targets", header, "-" * len(header)]
        for goal in goals:
            verdict = {True: "met", False: "MISSED", None: f"not measured ({goal['why_missing'] or '?'})"}[goal["met"]]
            if goal.get("caveat"):
                verdict += f" ({goal['caveat']})"
            lines.append(f"{_short(goal['what'], 58):<58} {goal['shape']:<7} {_num(goal['measured'], '.3g'):>9} "
                         f"{goal['target']:>9}  {verdict}")
    if notes:
        lines += ["", "notes:"] + [f"[{number}] {key}" for key, number in notes.items()]
    return "\n".join(lines)


def _why(row: Row) -> str:
    """The note behind a row's status: the gate's errors where it failed the gate."""
    return _gate_text(row) if row.status in ("WRONG", WRONG_TIMED) else row.status


def _gate_text(row: Row) -> str:
    bad = [f"{name} err {c['error']:.3g} > bound {c['bound']:.3g} (eager {c['eager_error']:.3g})"
           for name, c in row.gate.items() if not c.get("passed", True)]
    return f"WRONG at T={row.gate_T}: " + ", ".join(bad)


def _mb(nbytes) -> str:
    return "-" if nbytes is None else f"{nbytes / 2 ** 20:.0f}"


def slug(text: str) -> str:
    """`"NVIDIA H200"` -> `"nvidia-h200"`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def output_stem(out_dir: Path, date: str, device_name: str) -> Path:
    """`<out>/<YYYY-MM-DD>-<device slug>` (add .json / .png)."""
    return Path(out_dir) / f"{date}-{slug(device_name)}"


def _plain(x):
    """JSON-safe: non-finite floats become strings, dataclasses dicts."""
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Row):
        return _plain(asdict(x))
    return x


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` as strict JSON (written to a sibling file and renamed, so a run
    killed mid-write leaves the previous complete file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_plain(payload), indent=1, allow_nan=False) + "\n")
    partial.replace(path)


def write_png(path: Path, ratios: list[dict], title: str) -> str | None:
    """A bar plot of the ratios (fwd and fwd+bwd side by side, log scale, a line at 1).
    Returns None on success, else why no plot was written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        return f"no PNG: matplotlib is not importable ({exc})"
    shown = [e for e in ratios if e["fwd"] is not None or e["fwd_bwd"] is not None]
    figure = Figure(figsize=(max(6.0, 0.55 * len(shown) + 2.0), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=9)
    if not shown:
        axes.text(0.5, 0.5, "no ratio: a peer or our implementation did not run", ha="center", va="center")
        axes.set_axis_off()
    else:
        positions = range(len(shown))
        width = 0.4
        for offset, key, label in ((-width / 2, "fwd", "fwd"), (width / 2, "fwd_bwd", "fwd+bwd")):
            values = [e[key] if e[key] is not None else float("nan") for e in shown]
            axes.bar([p + offset for p in positions], values, width, label=label)
            for p, e in zip(positions, shown):  # the issue's floor, a tick across the bar
                if e.get(f"floor_{key}") is not None:
                    axes.plot([p + offset - width / 2, p + offset + width / 2], [e[f"floor_{key}"]] * 2,
                              color="red", linewidth=1.5)
        axes.axhline(1.0, color="black", linewidth=0.8)
        axes.set_yscale("log")
        axes.set_ylabel("peer time / our time (red ticks: targets)")
        axes.set_xticks(list(positions))
        axes.set_xticklabels([f"{e['pairing']}\n{e['shape']}" for e in shown], rotation=60, ha="right", fontsize=7)
        axes.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return None
