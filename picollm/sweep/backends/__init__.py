"""Where a batch's jobs run: local worker processes (local.LocalPool) or Ray tasks (ray.RayPool).

A backend has run(jobs), which yields (job, result) as each job finishes (the list may grow while the results
are read: a sampler asks for more as results come in), and close().
"""
