"""Many runs: search spaces and presets, samplers, the batch (local workers or Ray) and its estimate."""
