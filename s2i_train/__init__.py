"""Training side of s2i: data, front end in torch, models, losses, training, evaluation."""
