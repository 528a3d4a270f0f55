"""`rlhf pipeline --recipe R`: the whole recipe in order, reusing every finished stage, then
the results table and the paper's claims checked against it (`make demo` runs it on tiny):

    world -> pretrain -> SFT -> comparisons -> RM -> PPO (ptx 0)
          -> pipeline.rounds x (comparisons of the last PPO policy -> RM -> PPO)
          -> PPO-ptx -> the extras of pipeline.extras (beyond the paper: DPO, GRPO,
             PPO-ptx+LoRA) -> eval

A round of iterated collection (paper section 3: steps 2 and 3 repeated) is the config with
compare.policy_run set to the last PPO run: its comparisons, RM and PPO runs are told apart
from the earlier rounds' by that key, and with rm.samples=chain each round's RM trains on the
comparisons of its own round and the earlier ones only, so a finished pipeline run again
reuses every round's runs.

A stage is reused when a finished run has the same config (in the sections it is made from,
rlhf.runs.MADE_FROM: `--set ppo.kl_coef=...` reuses pretraining, SFT and the RM) and is not
stale (the RM: the store's comparisons changed; PPO, DPO, GRPO: it started from another SFT or
RM run). An interrupted run of pretraining, SFT, PPO or GRPO resumes from its checkpoint when
the pipeline is run again (rlhf.runs.latest_resumable says when that is safe); an interrupted
RM or DPO run, which read the store, starts over. The extras are rows of the same results
table, each compared with PPO-ptx (rlhf.results.versus_reference); the paper's claims
(rlhf.claims) read only the base, SFT, PPO and PPO-ptx rows.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
from pathlib import Path
from typing import Any

from rlhf.config import LabConfig, workspace_option
from rlhf.errors import ConfigError
from rlhf.runs import Run, latest_done, latest_resumable

# pipeline.extras -> the results table's row
EXTRAS = {"dpo": "DPO", "grpo": "GRPO", "lora": "PPO-ptx+LoRA"}


def finished_run(module: Any, cfg: LabConfig, stage: str) -> tuple[Run | None, str]:
    """(a finished run of `stage` to reuse or None, what to tell the user)."""
    reuse = latest_done(cfg, stage)
    if reuse is not None and not reuse.model_dir.is_dir():  # deleted by hand: later stages fail
        return (
            None,
            f"not reusing {reuse.dir}: finished, but its model/ is gone; training a new run",
        )
    why = reuse is not None and hasattr(module, "stale") and module.stale(reuse, cfg)
    if why:  # same config, other data (the RM: the store's comparisons changed)
        return None, f"not reusing: {why}; training a new run"
    if reuse is not None:
        return reuse, f"reusing finished run {reuse.dir} (same config; --new trains another)"
    return None, ""


def interrupted_run(cfg: LabConfig, stage: str) -> tuple[Path | None, str]:
    """(the directory of an interrupted run of this config to resume, rlhf.runs.latest_resumable,
    or None; what to tell the user)."""
    run = latest_resumable(cfg, stage)
    if run is None:
        return None, ""
    return run.dir, f"resuming interrupted run {run.dir} from its checkpoint"


def reuse_or_resume(module: Any, cfg: LabConfig, stage: str) -> tuple[Run | None, Path | None, str]:
    """(the finished run of this config to reuse (finished_run) or None, else the directory of
    the interrupted one to resume (interrupted_run) or None, what to tell the user)."""
    run, message = finished_run(module, cfg, stage)
    if run is not None:
        return run, None, message
    run_dir, resuming = interrupted_run(cfg, stage)
    return None, run_dir, resuming or message


def reuse_resume_or_train(module: Any, cfg: LabConfig, stage: str, progress: bool = True) -> Run:
    """The run reuse_or_resume finds, reused or resumed, else a new run trained now; it says
    which it reused or resumed."""
    run, run_dir, message = reuse_or_resume(module, cfg, stage)
    if message:
        print(message)
    return run or module.train(cfg, run_dir=run_dir, progress=progress)


def stage_run(module_name: str, cfg: LabConfig, stage: str, progress: bool = True) -> Run:
    """reuse_resume_or_train for `rlhf.<module_name>`, then its summary and run directory."""
    from rlhf.runs import read_eval

    module = importlib.import_module(f"rlhf.{module_name}")
    run = reuse_resume_or_train(module, cfg, stage, progress)
    if hasattr(module, "summary") and (run.dir / "eval.json").exists():
        print(module.summary(read_eval(run)))
    print(run.dir)
    return run


def plain_config(cfg: LabConfig) -> LabConfig:
    """The PPO row: ptx_coef 0 whatever ppo.ptx_coef says."""
    return dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, ptx_coef=0.0))


def round_config(cfg: LabConfig, policy: Run) -> LabConfig:
    """The next round of iterated collection: `policy` (the last round's PPO run) is sampled
    and ranked, and the RM and PPO of the round are made from that. The run is named
    "runs/<name>", relative to the workspace (rlhf.runs.named_run), so that the configs of a
    copied workspace's runs still match and its rounds are reused."""
    here = policy.dir.parent.resolve() == (cfg.workspace_dir / "runs").resolve()
    name = f"runs/{policy.dir.name}" if here else str(policy.dir)
    return dataclasses.replace(cfg, compare=dataclasses.replace(cfg.compare, policy_run=name))


def last_round(cfg: LabConfig) -> LabConfig:
    """The config of the last round of pipeline.rounds whose RM has finished (cfg itself
    without rounds): the notebooks show the pipeline's own RM and PPO runs with it."""
    for _ in range(cfg.pipeline.rounds):
        policy = latest_done(plain_config(cfg), "ppo")
        nxt = round_config(cfg, policy) if policy is not None else None
        if nxt is None or latest_done(nxt, "rm") is None:
            break
        cfg = nxt
    return cfg


def check_rounds(cfg: LabConfig) -> None:
    if cfg.pipeline.rounds and cfg.rm.samples != "chain":
        raise ConfigError(
            f"pipeline.rounds={cfg.pipeline.rounds} needs rm.samples=chain (now "
            f"{cfg.rm.samples!r}): with every stored comparison, the first round's RM would be "
            "trained again on the later rounds' comparisons; add --set rm.samples=chain"
        )
    if cfg.pipeline.rounds and cfg.compare.policy_run:
        raise ConfigError(
            "pipeline.rounds: the pipeline sets compare.policy_run for each round; leave it "
            f"empty (now {cfg.compare.policy_run!r})"
        )


def ptx_config(cfg: LabConfig, gamma: float = 0.0) -> LabConfig:
    """The PPO-ptx row: gamma_ptx `gamma`, else ppo.ptx_coef, else pipeline.ptx_coef."""
    gamma = gamma or cfg.ppo.ptx_coef or cfg.pipeline.ptx_coef
    return dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, ptx_coef=gamma))


def ptx_lora_config(cfg: LabConfig) -> LabConfig:
    """The lora extra: PPO-ptx with LoRA adapters of rank pipeline.lora_r on the policy."""
    ptx = ptx_config(cfg)
    return dataclasses.replace(ptx, ppo=dataclasses.replace(ptx.ppo, lora_r=cfg.pipeline.lora_r))


def extras(cfg: LabConfig) -> list[str]:
    """pipeline.extras in order, each once; a clear error, before any stage runs, for a name
    that is not an extra or sizes an extra's trainer would reject."""
    names = list(dict.fromkeys(cfg.pipeline.extras))
    unknown = [n for n in names if n not in EXTRAS]
    if unknown:
        raise ConfigError(
            f"pipeline.extras: unknown {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(EXTRAS)}; e.g. rlhf pipeline --with dpo,grpo)"
        )
    if "lora" in names and cfg.pipeline.lora_r < 1:
        raise ConfigError(
            f"pipeline.lora_r must be >= 1 for the lora extra, got {cfg.pipeline.lora_r}"
        )
    if "grpo" in names:
        from rlhf import grpo

        grpo.check(cfg)
    return names


def run(cfg: LabConfig, out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Every stage, then eval. Returns {"runs", "results", "claims", "paths"}."""
    from rlhf import claims, compare, results
    from rlhf.world import build_world

    wanted = extras(cfg)
    check_rounds(cfg)
    build_world(cfg, progress=progress)
    runs: dict[str, Run] = {}  # the results table's label -> run
    if not cfg.sft.base_model:  # a real model (sft.base_model) replaces the pretrain stage
        runs["base"] = stage_run("pretrain", cfg, "pretrain", progress)
    runs["SFT"] = stage_run("sft", cfg, "sft", progress)
    print(compare.summary(compare.collect(cfg, progress=progress)))
    runs["RM"] = stage_run("reward", cfg, "rm", progress)
    runs["PPO"] = stage_run("ppo", plain_config(cfg), "ppo", progress)
    earlier: dict[str, Run] = {}  # the earlier rounds' RM and PPO: rows after PPO-ptx
    for r in range(1, cfg.pipeline.rounds + 1):
        print(f"\nRound {r} of iterated collection: the samples of {runs['PPO'].dir.name}")
        earlier[f"RM round {r - 1}"], earlier[f"PPO round {r - 1}"] = runs["RM"], runs["PPO"]
        cfg = round_config(cfg, runs["PPO"])
        print(compare.summary(compare.collect(cfg, progress=progress)))
        runs["RM"] = stage_run("reward", cfg, "rm", progress)
        runs["PPO"] = stage_run("ppo", plain_config(cfg), "ppo", progress)
    runs["PPO-ptx"] = stage_run("ppo", ptx_config(cfg), "ppo", progress)
    runs.update(earlier)
    for name in wanted:  # beyond the paper
        label = EXTRAS[name]
        if name == "lora":
            extra = stage_run("ppo", ptx_lora_config(cfg), "ppo", progress)
        else:
            extra = stage_run(name, cfg, name, progress)
        same = [k for k, r in runs.items() if r.dir == extra.dir]
        if same:  # ppo.lora_r == pipeline.lora_r: the pipeline's PPO-ptx has LoRA already
            print(f"{label} is the {same[0]} run itself (ppo.lora_r {cfg.ppo.lora_r}): no row")
            continue
        runs[label] = extra
    dirs = [r.dir for r in runs.values()]
    res = results.evaluate_runs(cfg, dirs, progress=progress, labels=list(runs))
    paths = results.write_results(res, out or cfg.workspace_dir / "results")
    return {
        "runs": {k: str(r.dir) for k, r in runs.items()},
        "results": res,
        "claims": claims.check_claims(res),
        "paths": [str(p) for p in paths],
        "workspace": str(cfg.workspace_dir),
    }


def next_steps(workspace: Path | str) -> list[str]:
    """How to open the notebooks and the dashboard on this workspace: `make` targets, since
    `rlhf` is on the PATH only with .venv activated, naming a workspace other than the default."""
    flag = workspace_option(workspace)
    env = f" RLHF_WORKSPACE={shlex.quote(str(workspace))}" if flag else ""
    return [
        f"Notebooks: make notebook{env} (they reuse these runs)",
        f"Dashboard: make dashboard{env} (or: rlhf dashboard{flag})  -> http://127.0.0.1:8501",
    ]


def summary(report: dict[str, Any]) -> str:
    from rlhf.results import breakdown_markdown, markdown, results_table, versus_markdown

    versus = versus_markdown(report["results"])
    where = breakdown_markdown(report["results"])
    lines = [
        "",
        markdown(results_table(report["results"])),
        "",
        *([versus, ""] if versus else []),
        *([where, ""] if where else []),
        "The paper's claims on this table:",
        *(c.line() for c in report["claims"]),
        "",
        "Results: " + ", ".join(report["paths"]),
        *next_steps(report["workspace"]),
    ]
    return "\n".join(lines)
