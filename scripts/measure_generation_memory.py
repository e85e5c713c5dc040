"""Memory and time of token-by-token generation on the CPU: a fixed-size recurrent state
(gdn) against a growing KV cache (transformer).

    PYTHONPATH=src python scripts/measure_generation_memory.py [--lengths 1024 8192]
        [--presets gdn transformer] [--d-model 128] [--n-layers 4]

Each (preset, length) runs in a fresh process: a 16-token prompt is prefilled in the
chunk form, then N tokens are decoded one at a time in the recurrent form (greedy), the
loop `attnforms.models.generate` runs, written out here so the caches can be read
between steps. Measured per run:

- cache bytes: the bytes of every tensor in the model's caches (`cache_nbytes`), after
  the prompt and at the end, and the largest value seen after any step. This is the
  tensor memory that decoding keeps; tracemalloc cannot see it (torch allocates tensor
  memory outside Python's allocator) and torch has no CPU allocator statistics.
- process RSS: resident memory before decoding and its high-water mark during decoding
  (`VmHWM`, reset through /proc/self/clear_refs where the kernel allows it), which
  includes transient workspace and allocator slack.
- time per generated token: the mean over all N steps, and the mean over the last 10 %
  of the steps (the cost of a step at about length N).

Float32, batch 1, one intra-op thread (timings on a shared machine vary with its load).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROMPT = 16


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(preset: str, length: int, d_model: int, n_layers: int) -> dict:
    """One measurement in this process; returns the numbers as a dict."""
    import torch

    from attnforms.layers import cache_nbytes
    from attnforms.models import build_model, count_parameters, generate, preset_config, sample_next

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(preset_config(preset, d_model=d_model, n_layers=n_layers)).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # The loop below must be generate's loop: check on a short run.
        out = model(prompt, use_cache=True, form="chunk")
        check, caches, logits = prompt, out.caches, out.logits[:, -1]
        for _ in range(8):
            next_ids = sample_next(logits, temperature=0)
            check = torch.cat([check, next_ids[:, None]], 1)
            out = model.step(next_ids, caches)
            caches, logits = out.caches, out.logits
        assert torch.equal(check, generate(model, prompt, 8, temperature=0))

        out = model(prompt, use_cache=True, form="chunk")
        caches, logits = out.caches, out.logits[:, -1]
        prompt_bytes = cache_nbytes(caches)
        rss_before = _status_kib("VmRSS")
        reset = _reset_peak_rss()
        peak_bytes, step_seconds = prompt_bytes, []
        for _ in range(length):
            start = time.perf_counter()
            next_ids = sample_next(logits, temperature=0)
            out = model.step(next_ids, caches)
            caches, logits = out.caches, out.logits
            step_seconds.append(time.perf_counter() - start)
            peak_bytes = max(peak_bytes, cache_nbytes(caches))
        tail = step_seconds[-max(1, length // 10):]
        return dict(
            preset=preset, tokens=length, parameters=count_parameters(model),
            cache_bytes_prompt=prompt_bytes, cache_bytes_final=cache_nbytes(caches),
            cache_bytes_peak=peak_bytes, rss_before_kib=rss_before,
            rss_peak_kib=_status_kib("VmHWM"), rss_peak_reset=reset,
            ms_per_token=1e3 * sum(step_seconds) / length, ms_per_token_last_10pct=1e3 * sum(tail) / len(tail),
        )


def run_isolated(preset: str, length: int, d_model: int, n_layers: int) -> dict:
    """`worker` in a fresh Python process, so RSS and its peak belong to this run only."""
    command = [sys.executable, __file__, "--worker", preset, str(length), "--d-model", str(d_model),
               "--n-layers", str(n_layers)]
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """A markdown table of the runs, with the growth of each preset from its shortest run."""
    mib = lambda b: b / 2**20  # noqa: E731
    lines = [
        "| preset | tokens | cache after prompt | cache at end (peak) | cache ratio vs shortest | "
        "RSS before | RSS peak (growth) | ms/token (mean) | ms/token (last 10 %) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shortest = {}
    for row in sorted(rows, key=lambda r: (r["preset"], r["tokens"])):
        base = shortest.setdefault(row["preset"], row)
        ratio = row["cache_bytes_peak"] / base["cache_bytes_peak"]
        growth = (row["rss_peak_kib"] - row["rss_before_kib"]) / 1024
        lines.append(
            f"| {row['preset']} | {row['tokens']} | {mib(row['cache_bytes_prompt']):.3f} MiB "
            f"| {mib(row['cache_bytes_final']):.3f} MiB ({mib(row['cache_bytes_peak']):.3f}) | {ratio:.2f} "
            f"| {row['rss_before_kib'] / 1024:.1f} MiB | {row['rss_peak_kib'] / 1024:.1f} MiB (+{growth:.1f}) "
            f"| {row['ms_per_token']:.2f} | {row['ms_per_token_last_10pct']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["gdn", "transformer"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 8192])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.d_model, args.n_layers)))
        return
    rows = []
    for preset in args.presets:
        for length in args.lengths:
            rows.append(run_isolated(preset, length, args.d_model, args.n_layers))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"d_model={args.d_model}, n_layers={args.n_layers}, float32, batch 1, prompt {PROMPT} tokens, "
          f"greedy; load average at the end: {os.getloadavg()[0]:.2f}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
