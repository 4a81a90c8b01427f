"""The Triton backend: kernel families (lowering to Triton source, their spaces and facts),
running generated kernels, compiling them ahead of time, and the built-in operator library.

Whether a process interprets kernels or compiles them is chosen where it first runs or
compiles one (`kernels.process_mode`), not when this package is imported.
"""
