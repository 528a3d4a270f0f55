"""Notebook controls (ipywidgets) for notebook 04: set beta and gamma_ptx, press Run, and a
short PPO run trains with them; its curves and win rate appear beside the runs made before.

    controls = PPOControls("tiny", overrides=[], workspace="", steps=10)
    controls.panel          # display it in a notebook cell
    controls.launch()       # what the Run button does; returns the run

beta is `ppo.kl_coef` (the per-token KL penalty, paper section 3.5), gamma_ptx is
`ppo.ptx_coef` (the pretraining-loss weight of PPO-ptx, appendix C.4). A run with the same
settings as a finished one is reused, and one stopped by an interrupted kernel resumes from
its checkpoint (rlhf.pipeline.reuse_resume_or_train), so pressing Run twice trains once."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import pandas as pd
from IPython.display import HTML, display

from rlhf import config, ppo, viz
from rlhf.errors import LabError
from rlhf.pipeline import reuse_resume_or_train
from rlhf.runs import Run, read_eval

# gamma_ptx values the control offers besides the recipe's: 0 (PPO) up to the paper's 27.8.
PTX_CHOICES = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 27.8)


def ptx_options(*also: float) -> list[tuple[str, float]]:
    """(label, value) pairs of the gamma_ptx control, ascending: PTX_CHOICES and `also`."""
    return [(f"{v:g}", v) for v in sorted({*PTX_CHOICES, *also})]


class PPOControls:
    """beta and gamma_ptx sliders, a steps slider and a Run button over one Output area."""

    def __init__(
        self,
        recipe: str,
        overrides: list[str] | None = None,
        workspace: str = "",
        steps: int = 10,
        progress: bool = True,
    ):
        self.recipe, self.overrides, self.workspace = recipe, list(overrides or []), workspace
        self.progress = progress
        cfg = config.load(recipe, self.overrides, workspace=workspace)
        base = cfg.ppo
        style = {"description_width": "initial"}
        # 0.005 .. 1 on a log scale: the paper's 0.02 and 0.3 (tiny's until 2026-11-27).
        self.beta = widgets.FloatLogSlider(
            value=base.kl_coef, base=10, min=-2.3, max=0, step=0.1, description="β (kl_coef)",
            readout_format=".3f", style=style,
        )  # fmt: skip
        # gamma_ptx spans four orders of magnitude and must reach 0 (plain PPO), so it picks
        # from a list rather than a linear or log scale: the recipe's PPO-ptx gamma
        # (pipeline.ptx_coef) and the paper's 27.8 (appendix C.4) are always among them.
        self.ptx = widgets.SelectionSlider(
            options=ptx_options(base.ptx_coef, cfg.pipeline.ptx_coef), value=base.ptx_coef,
            description="γ_ptx (ptx_coef)", style=style,
        )  # fmt: skip
        self.steps = widgets.IntSlider(
            value=steps, min=1, max=max(60, steps), description="PPO steps", style=style
        )
        self.run_button = widgets.Button(description="Run PPO", button_style="primary")
        self.output = widgets.Output()
        self.runs: dict[str, Run] = {}  # label -> run, in the order they were launched
        self.run_button.on_click(self.launch)
        self.panel = widgets.VBox(
            [widgets.HBox([self.beta, self.ptx, self.steps, self.run_button]), self.output]
        )

    def overrides_now(self) -> list[str]:
        """The recipe's overrides plus the controls' values (later overrides win)."""
        return self.overrides + [
            f"ppo.kl_coef={self.beta.value:.4g}",
            f"ppo.ptx_coef={self.ptx.value:.4g}",
            f"ppo.steps={self.steps.value}",
        ]

    def launch(self, _button: Any = None) -> Run | None:
        """Train (or reuse) the run the controls describe and show every run launched so far.
        An error is shown in the output area, not raised: a button's handler has no caller."""
        label = f"β={self.beta.value:.3g}, γ_ptx={self.ptx.value:.3g}, {self.steps.value} steps"
        self.run_button.disabled = True
        try:
            with self.output:
                try:
                    cfg = config.load(self.recipe, self.overrides_now(), workspace=self.workspace)
                    run = reuse_resume_or_train(ppo, cfg, "ppo", self.progress)
                except LabError as e:
                    print(f"error: {e}")
                    return None
                self.runs[label] = run
                self.output.clear_output(wait=True)
                self.show()
            return run
        finally:
            self.run_button.disabled = False

    def table(self) -> pd.DataFrame:
        """One row per launched run: its settings and the final report's main figures."""
        rows = []
        for label, run in self.runs.items():
            rep = read_eval(run)
            win = rep["win_rate_vs_sft"]
            rows.append(
                {
                    "run": label,
                    "win rate vs SFT": f"{win['mean']:.3f} [{win['lo']:.3f}, {win['hi']:.3f}]",
                    "gold Likert": round(rep["likert/policy"]["mean"], 2),
                    "held-out perplexity": round(rep["perplexity/policy"], 3),
                    "KL at the end": round(rep["training"]["objective/kl"]["last"], 2),
                    "run dir": run.dir.name,
                }
            )
        return pd.DataFrame(rows)

    def show(self) -> None:
        """The table, the training curves and the reward-KL frontier of every launched run."""
        metrics = {label: run.metrics() for label, run in self.runs.items()}
        display(HTML(self.table().to_html(index=False)))
        display(viz.ppo_curves(metrics))
        display(viz.reward_vs_kl(metrics))
