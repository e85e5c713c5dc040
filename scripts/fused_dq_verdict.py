"""Reads device_softmax_variants.py's JSON (the run `'DQ_FUSED=False;CHECK=0'
'DQ_FUSED=True'`) and prints `softmax:DQ_FUSED=True` when the fused backward passed
its bf16 checks and was faster forward + backward in every timed op, else nothing:
device_pending.sh's bench step then measures the better backward.

    python3 scripts/fused_dq_verdict.py <softmax_variants.json>
"""
import json
import sys


def verdict(results: dict) -> bool:
    by_setting = {entry["settings"].get("DQ_FUSED"): entry for entry in results["variants"]}
    two_kernel, fused = by_setting.get("False"), by_setting.get("True")
    if not two_kernel or not fused or "error" in fused or "timing" not in two_kernel:
        return False
    if not fused.get("checks") or not all(c["passed"] for c in fused["checks"]):
        return False
    before = {row["op"]: row["fwd_bwd_ms"] for row in two_kernel["timing"]}
    after = {row["op"]: row["fwd_bwd_ms"] for row in fused["timing"]}
    return before.keys() == after.keys() and all(after[op] < before[op] for op in before)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        if verdict(json.load(f)):
            print("softmax:DQ_FUSED=True")
