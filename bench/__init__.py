"""Benchmark harness: the engine's variants against a hand-written eager PyTorch SegNet."""
