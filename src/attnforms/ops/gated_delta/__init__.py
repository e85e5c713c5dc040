"""The gated delta rule family: linear attention, GLA, DeltaNet, Gated DeltaNet, KDA."""
from .api import (
    FAMILY, delta_rule, gated_delta_rule, gated_delta_rule_update_, gated_deltanet, gla, kda,
    linear_attention, simple_gla,
)
