"""Many runs: a search space, a sampler that chooses its configs, and the batch that trains them.

    space.py      the space format; presets/<name>.yaml are spaces too, read by the same loader
    samplers/     grid, random, halving, Optuna's: one ask/tell protocol, one registry (SAMPLERS)
    batch.py      train_batch: ask the sampler, train on a backend, tell it, continue the best run
    settings.py   BatchSettings: train_batch's keywords and batch_train.py's flags
    jobs.py       Job, run_job (in a worker), Outcome, BatchReport
    backends/     local worker processes, Ray tasks
    planning.py   step budgets, what the batch does to every config, workers and threads
    manifest.py   the batch's lock and its manifest
    dry_run.py    the plan a dry run prints; estimate.py: how long it will take
    tuning.py     OptunaSearch: Optuna's study of a space behind picollm's fingerprints
"""
