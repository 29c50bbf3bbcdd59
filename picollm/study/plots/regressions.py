"""regression_summary.txt, regression_diagnostics.png (residuals and their Q-Q plot) and
regression_coefficients.png (each coefficient with its 95% interval): the OLS fits of the formula, per family
and pooled. The fits are made by summarize before anything is drawn (stats.regressions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from picollm.core.log import get_logger
from picollm.study.common import Skip
from picollm.study.plots.base import Plot, PlotInput, save_figure
from picollm.study.stats import OLSFit, summary_text

log = get_logger()


def keys(inputs: PlotInput, family: str | None) -> list[tuple[str, Any]]:
    """The groups whose fit was skipped are listed as such (keys that are a Skip), then the plot itself."""
    return [(name, Skip(reason)) for name, reason in inputs.fit_skips.items()] + [("regressions", None)]


def fits(inputs: PlotInput, key: None) -> dict[str, OLSFit]:
    for fit in inputs.fits.values():
        for reason in fit.dropped:
            log.info(f"regression[{fit.group}]: dropped {reason}")
    if not inputs.fits:
        raise Skip("no group has enough runs for a regression")
    return inputs.fits


def draw(fits: dict[str, OLSFit], paths: list[Path]) -> list[Path]:
    summary, diagnostics, coefficients = paths
    summary.write_text("\n\n".join(summary_text(f) for f in fits.values()))
    draw_diagnostics(fits, diagnostics)
    coef = {name: fit for name, fit in fits.items() if len(fit.result.params) > 1}
    if not coef:
        return [summary, diagnostics]
    draw_coefficients(coef, coefficients)
    return paths


def draw_diagnostics(fits: dict[str, OLSFit], path: Path) -> None:
    from statsmodels.graphics.gofplots import qqplot  # heavy: loaded only where a figure needs it

    fig, axes = plt.subplots(len(fits), 2, figsize=(10, 3.6 * len(fits)), squeeze=False)
    for (name, fit), (ax_res, ax_qq) in zip(fits.items(), axes):
        r = fit.result
        ax_res.scatter(r.fittedvalues, r.resid, s=20, alpha=0.8)
        ax_res.axhline(0, color="black", lw=1)
        ax_res.set(xlabel="fitted value (nats/token)", ylabel="residual (nats/token)",
                   title=f"{name}: residuals vs fitted (n={len(fit.data)})")
        qqplot(np.asarray(r.resid), line="s", ax=ax_qq, markersize=4)  # "s": the normal scaled by their std
        ax_qq.set(xlabel="normal quantile (standard deviations)", ylabel="residual quantile (nats/token)",
                  title=f"{name}: Q-Q plot of residuals")
    fig.tight_layout()
    save_figure(fig, path)


def draw_coefficients(coef: dict[str, OLSFit], path: Path) -> None:
    sizes = [len(f.result.params) for f in coef.values()]  # panel height follows its coefficient count
    fig, axes = plt.subplots(len(coef), 1, figsize=(8, 0.4 * sum(sizes) + 1.1 * len(coef)), squeeze=False,
                             gridspec_kw={"height_ratios": sizes})
    for (name, fit), ax in zip(coef.items(), axes[:, 0]):
        params = fit.result.params.drop("Intercept", errors="ignore")
        ci = fit.result.conf_int().loc[params.index]
        pos = np.arange(len(params))
        ax.errorbar(params.values, pos, xerr=[params - ci[0], ci[1] - params], fmt="o", capsize=4)
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_yticks(pos, params.index)
        ax.set(xlabel="coefficient on val loss (nats/token per unit), 95% CI", title=f"{name}: OLS coefficients")
    fig.tight_layout()
    save_figure(fig, path)


PLOT = Plot("regressions", "Regressions", "regression_", data=fits, draw=draw, keys=keys,
            files=lambda key: ["regression_summary.txt", "regression_diagnostics.png", "regression_coefficients.png"])
