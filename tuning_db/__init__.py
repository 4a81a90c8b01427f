"""Tuning DB."""
