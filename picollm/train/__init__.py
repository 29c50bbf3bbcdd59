"""Training one run: the loop, optimizers, the learning-rate schedule and evaluation."""
