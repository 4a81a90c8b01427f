"""Differential fuzzing of the DSL-to-Triton path: a seeded program generator (`programs`),
the JSON program format that rebuilds a TE graph (`program`), one pair's check against the
reference evaluator (`runner`) and a shrinker (`shrink`). The parallel driver is bench/fuzz.py."""
