"""The formulation families."""
