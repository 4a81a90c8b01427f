"""Tensor-expression DSL."""
