"""Reads device_softmax_variants.py's JSON (a run of the two-kernel backward,
`'DQ_FUSED=False;CHECK=0'`, and fused variants `'DQ_FUSED=True;...'`) and prints the
launcher settings of the fastest fused variant that passed its bf16 checks and was
faster forward + backward than the two-kernel backward in every timed op, as
`softmax:NAME=VALUE;...`, else nothing: device_pending.sh's bench step then measures
the better backward.

    python3 scripts/fused_dq_verdict.py <softmax_variants.json>
"""
import json
import sys


def times(entry: dict) -> dict:
    return {row["op"]: row["fwd_bwd_ms"] for row in entry.get("timing", [])}


def verdict(results: dict) -> str:
    variants = results["variants"]
    two_kernel = next((e for e in variants if e["settings"].get("DQ_FUSED") == "False"), None)
    if two_kernel is None or not times(two_kernel):
        return ""
    before = times(two_kernel)
    winners = []
    for entry in variants:
        after = times(entry)
        if (entry["settings"].get("DQ_FUSED") == "True" and "error" not in entry
                and entry.get("checks") and all(c["passed"] for c in entry["checks"])
                and after.keys() == before.keys() and all(after[op] < before[op] for op in before)):
            winners.append((sum(after.values()), entry["settings"]))
    if not winners:
        return ""
    settings = min(winners, key=lambda w: w[0])[1]
    return "softmax:" + ";".join(f"{name}={value}" for name, value in settings.items() if name != "CHECK")


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(verdict(json.load(f)))
