#!/usr/bin/env bash
# The mLSTM split form's fault (session 14's compute-sanitizer run: an out-of-bounds
# shared-memory read by a product of the state-only pass): the split form at S1, chunk
# 128, under the suspects' settings, one child process each; then, for the first setting
# that ran clean, the float64 checks and S2 / S1 times with the split form where it is
# chosen (EXP_SPLIT=auto: S2).      OUT=<folder> bash scripts/device_split_fault.sh
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
export PYTHONPATH="$PWD/src"
base='EXP_FORWARD=restructured;EXP_SPLIT=always'
timeout 170 python3 scripts/device_fault.py --shape 8,4096,16 --chunk 128 --repeats 2 --variant "$base" \
    --variant "$base;SPLIT_STATE_STAGES=1" --variant "$base;SPLIT_STATE_N_PRODUCT=False" \
    --variant "$base;SPLIT_STATE_STAGES=1;SPLIT_STATE_N_PRODUCT=False" 2>&1 | grep -v -i warn | tee "$OUT/fault.txt"
ok=$(grep "^OK" "$OUT/fault.txt" | grep -m1 -o "SPLIT_STATE[^']*")
echo "first clean setting with a change: ${ok:-none}"
if [ -n "$ok" ]; then
    sets=$(echo "$ok" | tr ';' '\n' | sed 's/^/--set /' | tr '\n' ' ')
    # shellcheck disable=SC2086  # one word per --set
    timeout 130 python3 scripts/device_mlstm_check.py --sections check,time --shapes S2,S1 --set EXP_SPLIT=auto $sets \
        2>&1 | grep -v -i warn | tee "$OUT/split_check.txt" | grep '"op": "mlstm",\|checks passed' | tail -8
fi
