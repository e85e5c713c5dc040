"""`attnforms bench` with launcher constants changed first, for a device run that
measures a setting before it becomes the default:

    python3 scripts/bench_with_settings.py 'mlstm:OUTPUT_PRODUCTS="bf16"' -- bench --ops mlstm ...

The first argument is `FAMILY:NAME=VALUE;NAME=VALUE` (FAMILY names the package under
`attnforms.ops` whose `triton.launch` module holds the constants; values as in
launch_settings.apply_variant); the arguments after `--` are `attnforms`'s command line. The
settings are printed first so the log records what ran.
"""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from launch_settings import apply_variant  # noqa: E402

from attnforms.cli import main  # noqa: E402


def apply(spec: str) -> dict:
    family, _, variant = spec.partition(":")
    launch = importlib.import_module(f"attnforms.ops.{family}.triton.launch")
    defaults = {name: value for name, value in vars(launch).items() if name.isupper()}
    return apply_variant(launch, defaults, variant, own=())


# At import, not under `__main__`: the bench measures in `spawn`ed workers, which import
# this script again (as `__mp_main__`, with the parent's sys.argv) but start from fresh
# modules, so the settings must be applied there too.
_SPLIT = sys.argv.index("--")
_APPLIED = {spec: apply(spec) for spec in sys.argv[1:_SPLIT]}

if __name__ == "__main__":
    for spec, settings in _APPLIED.items():
        print("launch settings:", spec, settings, flush=True)
    sys.exit(main(sys.argv[_SPLIT + 1:]))
