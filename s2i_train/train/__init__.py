"""Training of s2i: configs, the shared loop (progress, metrics, checkpoints, resume, SIGINT), DDP, and
one module per stage (judge, teacher, encoder, generator)."""
