"""The formulation families and the registry the CLI and benchmarks read."""
from .aaren import FAMILY as AAREN
from .aaren import aaren
from .gated_delta import FAMILY as GATED_DELTA
from .gated_delta import (
    delta_rule, gated_delta_rule, gated_delta_rule_update_, gated_deltanet, gla, kda,
    linear_attention, simple_gla,
)
from .mlstm import FAMILY as MLSTM
from .mlstm import mlstm
from .softmax import FAMILY as SOFTMAX
from .softmax import sliding_window_attention, softmax_attention

# op name -> Family (its implementations of each form).
FAMILIES = {family.name: family for family in (SOFTMAX, GATED_DELTA, MLSTM, AAREN)}

# op name -> the public function.
OPS = {
    "softmax_attention": softmax_attention,
    "gated_delta_rule": gated_delta_rule,
    "mlstm": mlstm,
    "aaren": aaren,
}
