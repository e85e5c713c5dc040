"""Triton building blocks shared by two or more op families, each with a PyTorch `_ref`
twin that says what it computes (tests compare the two under the interpreter)."""
