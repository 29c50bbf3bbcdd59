"""picollm: a batch-train-then-analyze lab for small language models.

The Python API (picollm/api.py), loaded on first use so that `import picollm` stays free of torch and
matplotlib:

    picollm.load_runs(analysis_dir)   the table of all analysed runs, a pandas DataFrame
    picollm.load_run(run_dir)         one run: .config .metrics .train_log .model .tokenizer .generate(prompt)
    picollm.train_run(**settings)     train one run (RunConfig's settings); its directory
"""

from picollm.core.version import __version__

__all__ = ["__version__", "load_runs", "load_run", "train_run", "Run"]
_API = frozenset({"load_runs", "load_run", "train_run", "Run"})


def __getattr__(name: str):
    if name in _API:
        from picollm import api  # the API's modules load on first use: `import picollm` imports no torch

        return getattr(api, name)
    raise AttributeError(f"module 'picollm' has no attribute {name!r}")
