"""The mLSTM's GPU numerics check on the CPU, with the GPU's tf32 products emulated: a
screen for a numerics change before it spends device time.

    python scripts/cpu_tf32_check.py [--src CHECKOUT] [B,T,H,K,V ...]

Triton's interpreter multiplies float32 tiles exactly; on the GPU a kernel's `tl.dot`
with input_precision "tf32" rounds both operands to tf32 (10 mantissa bits) first. Here
the interpreter's dot rounds them the same way (round to nearest even), then the check
of `device_mlstm_check.py` runs (bf16 inputs; float64 golden; the bf16 eager reference;
the 2x rule) for the chunk form of both gates, and prints each gradient's error as a
share of its bound. --src runs another checkout's kernels (e.g. a git worktree of the
commit before a change), for a like-for-like comparison. The GPU's 16-bit products
(split16, bf16 operands) are not emulated: there the CPU keeps float32. Session 17: the
shares of the kept kernels came within about 2x of the H100's (bench/NOTES-mlstm.md).
Default shapes: those of the GPU check except T 4096 (minutes each here).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHAPES = ("2,256,4,128,128", "2,1000,2,100,60", "1,512,2,256,256")


def round_to_tf32(x):
    """float32 numpy array -> the same values rounded to tf32 (others unchanged)."""
    import numpy as np
    if x.dtype != np.float32:
        return x
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & 0xFFFFE000
    return bits.astype(np.uint32).view(np.float32)


def emulate_tf32_dots():
    from triton.runtime import interpreter
    exact = interpreter.InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if str(input_precision).lower().endswith("tf32"):
            a = interpreter.TensorHandle(round_to_tf32(a.data), getattr(a.dtype, "scalar", a.dtype))
            b = interpreter.TensorHandle(round_to_tf32(b.data), getattr(b.dtype, "scalar", b.dtype))
        return exact(self, a, b, d, input_precision, max_num_imprecise_acc)

    interpreter.InterpreterBuilder.create_dot = create_dot


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=os.path.dirname(HERE), help="the checkout whose kernels run")
    parser.add_argument("shapes", nargs="*", default=DEFAULT_SHAPES, help="B,T,H,K,V")
    args = parser.parse_args()
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path[:0] = [os.path.join(args.src, "src"), os.path.join(args.src, "scripts")]
    emulate_tf32_dots()
    import device_mlstm_check as check
    check.DEVICE = "cpu"
    print("kernels from", args.src)
    shapes = [tuple(int(x) for x in shape.split(",")) for shape in args.shapes]
    for entry in check.check_mlstm(shapes):
        if entry.get("form") == "chunk":
            shares = {name: round(v["error"] / v["bound"], 3) for name, v in entry.items()
                      if isinstance(v, dict) and "bound" in v and name.startswith("grad")}
            print(entry["gate"], "B T H K V =", entry["B"], entry["T"], entry["H"], entry["K"], entry["V"], shares,
                  flush=True)


if __name__ == "__main__":
    main()
