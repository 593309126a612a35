"""Benchmarks of the lean runtime against the PyTorch baseline."""
