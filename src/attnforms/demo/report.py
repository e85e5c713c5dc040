"""The demo's report folder: `report.md` (tables), `results.json` (everything measured)
and PNG plots (matplotlib, Agg backend, so no display is needed)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

PLOTS = ("accuracy_vs_steps.png", "decode_cost_vs_context.png")
from .settings import FIXED_STATE, FIXED_STATE_TARGET, SOFTMAX_TARGET  # noqa: E402


# The `--full` tasks' expectations (issue text): on T0-b, fixed-state formulations
# "clearly below" the softmax control; on the character LM, every formulation "well
# below" the unigram entropy, taken here as at least one bit per character below it.
CHAR_LM_MARGIN_BITS = 1.0


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _expectation(preset: str, block: dict, task: str) -> str:
    """What quality-anchors §5.1 (T0-a) or the demo's issue (T0-b, the character LM)
    expects of `preset` on `task`, and whether it was met; "" where nothing is expected."""
    results = block["results"]
    metric = block["metric"]
    value = results[preset][metric]
    if task == "T0-a":
        if preset == "transformer":
            return f"≥ {SOFTMAX_TARGET}: " + _met(value >= SOFTMAX_TARGET)
        if preset in FIXED_STATE:
            return f"≥ {FIXED_STATE_TARGET}: " + _met(value >= FIXED_STATE_TARGET)
        if preset == "swa-transformer":
            reach = block["window_reach"]
            return f"≈ reach {reach:.3f} ± 0.05: " + _met(abs(value - reach) <= 0.05)
        chance = block["chance"]["context_values"]
        return f"≈ chance {chance:.3f}: " + _met(value <= chance + 0.05)
    if task == "T0-b":
        if preset == "transformer":
            return f"≥ {SOFTMAX_TARGET}: " + _met(value >= SOFTMAX_TARGET)
        control = results.get("transformer", {}).get(metric)
        if preset in FIXED_STATE and control is not None:
            return f"below the softmax control's {control:.3f}: " + _met(value < control)
        return ""
    unigram = (block.get("unigram_bits") or {}).get("validation")
    if unigram is None:
        return ""
    bound = unigram - CHAR_LM_MARGIN_BITS
    return f"≤ unigram {unigram:.2f} − {CHAR_LM_MARGIN_BITS:g}: " + _met(value <= bound)


def main_table(results: dict, task: str = "T0-a") -> str:
    """The headline table (Markdown): one row per formulation on `task`, with what the
    task expects of each (`_expectation`)."""
    block = results["tasks"][task]
    metric = block["metric"]
    lines = [f"| formulation | width | params | state B/layer/seq @T={block['task']['seq_len']} | "
             f"peak lr | steps | {metric.replace('_', ' ')} | train tok/s | {task} expectation |",
             "|---|---|---|---|---|---|---|---|---|"]
    for preset, row in block["results"].items():
        note = _expectation(preset, block, task)
        lines.append(f"| {row['label']} | {row['d_model']} | {row['parameters']:,} | "
                     f"{row['state_bytes_per_layer']:,.0f} | {row['lr']:g} | {row.get('steps', block['steps'])} | "
                     f"{row[metric]:.3f} | "
                     f"{row['tokens_per_s']:,.0f} | {note} |")
    return "\n".join(lines)


def _decode_table(results: dict) -> str:
    contexts = [c["context"] for c in next(iter(results["decode"].values()))]
    head = " | ".join(f"ms/token @{c} | cache KiB @{c}" for c in contexts)
    lines = [f"| formulation | {head} |", "|---|" + "---|" * (2 * len(contexts))]
    for preset, costs in results["decode"].items():
        cells = " | ".join(f"{c['ms_per_token']:.2f} | {c['cache_bytes'] / 1024:,.1f}" for c in costs)
        lines.append(f"| {results['labels'][preset]} | {cells} |")
    return "\n".join(lines)


def _window_bands(block: dict) -> list[str]:
    """The bullet on which lookups the window model makes: its accuracy over query-key
    distances within one-step lookup, within the receptive field only, and beyond."""
    row = block["results"].get("swa-transformer")
    if row is None or "bands" not in row:
        return []
    direct, field = block["window_direct_tokens"], block["window_reach_tokens"]
    cell = lambda value: "-" if value is None else f"{value:.3f}"
    bands = row["bands"]
    return [f"- Sliding window W 8 by query-key distance: keys at most {direct} tokens back (one attention step "
            f"of the last layer reaches them; {block['window_direct_reach']:.3f} of the queries): accuracy "
            f"**{cell(bands['direct'])}**; {direct + 1}-{field} back (only through a pair the first layer "
            f"carried forward): **{cell(bands['field'])}**; beyond the receptive field: "
            f"**{cell(bands['beyond'])}** (must be guessing)."]


def time_table(results: dict) -> str:
    """Where the wall time went (Markdown): each phase of the run (`phases_s`), the rest
    (start-up, building the lineup), and each trained formulation's training steps and
    evaluations."""
    phases = results.get("phases_s", {})
    lines = ["| phase | wall s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in phases.items()]
    lines += [f"| other (start-up, lineup, plots before this report) | {results['wall_s'] - sum(phases.values()):.1f} |",
              f"| **total** | **{results['wall_s']:.1f}** |", ""]
    for name, block in results["tasks"].items():
        lines += [f"| {name}: formulation | steps | wall s | of which evaluating | ms per step (wall less evaluating) |",
                  "|---|---|---|---|---|"]
        for row in block["results"].values():
            if "eval_s" not in row:
                continue
            stepping = row["train_s"] - row["eval_s"]
            lines.append(f"| {row['label']} | {row['steps']} | {row['train_s']:.1f} | {row['eval_s']:.1f} | "
                         f"{1000 * stepping / max(row['steps'], 1):.0f} |")
        lines.append("")
    return "\n".join(lines)


def _side_by_side(results: dict) -> str:
    """The sentence on how the runs shared the machine, when several ran at once."""
    workers = results.get("workers", 1)
    if workers == 1:
        return ""
    return (f" The training runs ran {workers} at a time, each in its own process with "
            f"{_threads(results['worker_threads'])}, so *train tok/s* is one such process's rate.")


def _threads(count: int) -> str:
    return f"{count} thread" + ("s" if count != 1 else "")


def _markdown(results: dict) -> str:
    check = results["check"]
    s = results["settings"]
    parts = [
        f"# attnforms demo ({results['level']})\n",
        f"Device {results['device']}, {_threads(results['threads'])}, torch {results['torch']}; "
        f"wall time {results['wall_s']:.0f} s." + _side_by_side(results) + "\n",
        f"## Check\n\n`attnforms check`: {check['passed']} of {check['rows']} rows pass"
        + ("." if not check["failed"] else ":\n\n" + "\n".join(f"- FAIL {f}" for f in check["failed"])) + "\n",
        "## MQAR T0-a\n",
        f"Training: at most {s['steps']} steps, batch {s['batch_size']}, peak lr per formulation (the table), "
        f"AdamW, {s['train_examples']} training examples; accuracy on {s['eval_examples']} held-out examples"
        + (f", evaluated every {s['eval_every']} steps; a run stops at the first evaluation with accuracy "
           f"≥ {s['stop_at']} (as Zoology's MQAR runs do; *steps* is where it stopped)"
           if s.get("stop_at") else "")
        + (f", or, for the fixed-state formulations, ≥ their T0-a level {FIXED_STATE_TARGET} (so *steps* is the "
           f"step at which each first met its level)" if s.get("stop_at") and s.get("stop_at_target") else "")
        + (f"; the negative controls (sliding window, Aaren) train for {s['control_steps']} steps, the budget "
           f"the softmax control needs" if s.get("control_steps") else "") + ". "
        f"Models: 2 blocks, 1 head, equal parameter count (widths from `match_parameters`). "
        f"Short convolution: {results['short_conv']}.\n",
    ]
    t0a = results["tasks"]["T0-a"]
    parts += [main_table(results), "",
              f"- Sliding window W 8: fraction of queries whose key lies within the model's receptive "
              f"field, {t0a.get('window_reach_tokens', '?')} tokens back (two windows of 8 and the block "
              f"convolution before each; counted on generated batches): **{t0a['window_reach']:.3f}**; "
              f"without the convolution (quality-anchors T0-c's count, < 2·8 tokens back): "
              f"{t0a.get('window_reach_no_conv', float('nan')):.3f}.",
              *_window_bands(t0a),
              f"- Chance without lookup (uniform over the context's values, 1/K): "
              f"**{t0a['chance']['context_values']:.3f}**; uniform over the value vocabulary: "
              f"{t0a['chance']['value_vocabulary']:.4f}.",
              "- State bytes: the caches the model returns for one sequence (KV cache for softmax, "
              "fixed state for the rest, plus the short convolution's window), divided by the layers.", ""]
    for name in [n for n in results["tasks"] if n != "T0-a"]:
        parts += [f"## {name}\n", main_table(results, name), ""]
        unigram = results["tasks"][name].get("unigram_bits")
        if unigram:
            parts += [f"- Unigram entropy (the best predictor that ignores context): **{unigram['validation']:.3f}** "
                      f"bits per character on the validation text ({unigram['train']:.3f} on the training text).", ""]
    parts += ["## Decoding cost (one sequence, T0-a models)\n", _decode_table(results), "",
              "## Time\n", "Wall seconds, so they depend on what else the machine runs"
              + (f"; the training runs ran {results['workers']} at a time, so a phase's time is less than the sum "
                 f"of its runs'" if results.get("workers", 1) > 1 else "") + ".\n", time_table(results),
              "## Plots\n", *(f"![{p}]({p})" for p in PLOTS), ""]
    return "\n".join(parts)


def _plots(results: dict, out: Path) -> None:
    labels = results["labels"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    t0a = results["tasks"]["T0-a"]
    for preset, row in t0a["results"].items():
        steps, values = zip(*row["curve"])
        ax.plot(steps, values, marker="o", markersize=3, label=labels[preset])
    ax.axhline(t0a["window_reach"], color="grey", linestyle=":", linewidth=1, label="window reach")
    ax.axhline(t0a["chance"]["context_values"], color="black", linestyle="--", linewidth=1, label="chance (1/K)")
    ax.set(xlabel="training step", ylabel="held-out accuracy", title="MQAR T0-a", ylim=(0, 1.02))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=80)
    plt.close(fig)

    fig, (mem, cost) = plt.subplots(1, 2, figsize=(9, 4))
    for preset, costs in results["decode"].items():
        contexts = [c["context"] for c in costs]
        mem.plot(contexts, [c["cache_bytes"] / 1024 for c in costs], marker="o", label=labels[preset])
        cost.plot(contexts, [c["ms_per_token"] for c in costs], marker="o", label=labels[preset])
    mem.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="cache KiB (one sequence)",
            title="decoding memory")
    cost.set(xscale="log", xlabel="context (tokens)", ylabel="ms per generated token", title="decoding time")
    mem.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=80)
    plt.close(fig)


def write_report(results: dict, out: Path) -> None:
    """Write report.md, results.json and the PNGs into `out` (created if missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    _plots(results, out)
    (out / "report.md").write_text(_markdown(results))
