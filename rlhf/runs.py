"""A run is a directory with fixed files (style.md principle 7):

    <workspace>/runs/<stage>__<recipe>__<seed>__<YYYYmmdd-HHMMSS>/
        config.json     the resolved LabConfig (rlhf.config), plus the stage name
        status.json     {"stage", "status": running|done|failed, "started", "finished",
                         "pid", "pid_started", "host" (the process that runs it), ...}
        metrics.jsonl   one JSON object per logged step: {"step": int, "<namespace>/<name>": float}
        samples.jsonl   sample outputs (later stages)
        checkpoint/     the last resumable state (model + optimizer + step)
        model/          the final model, save_pretrained (safetensors) with its tokenizer
        eval.json       the stage's own measurements

Every file is written to a temporary name and renamed, so a killed process never leaves a
half-written config or status behind.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf import distributed as dist
from rlhf.config import LORA_KEYS, LabConfig, check_length, from_dict
from rlhf.errors import ConfigError, RunError
from rlhf.world.build import WORLD_VERSION

STAGES = ("pretrain", "sft", "rm", "ppo", "dpo", "grpo")
# The stages whose model is a policy: what a *.sft_run may name (compare.sft_run a PPO run, say).
POLICY_STAGES = ("pretrain", "sft", "ppo", "dpo", "grpo")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: temp file in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@dataclass
class Run:
    dir: Path

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, cfg: LabConfig, stage: str, run_dir: str | Path | None = None) -> Run:
        """A new run directory (named like cleanrl's `{env}__{exp}__{seed}__{time}`)."""
        if stage not in STAGES:
            raise RunError(f"unknown stage '{stage}' (stages: {', '.join(STAGES)})")
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            recipe = Path(cfg.recipe).stem
            base = cfg.workspace_dir / "runs" / f"{stage}__{recipe}__{cfg.seed}__{stamp}"
            base.parent.mkdir(parents=True, exist_ok=True)
            path, n = base, 1
            while True:  # mkdir claims a name atomically: two runs started within the same
                try:  # second, even by two processes at once, get two directories
                    path.mkdir()
                    break
                except FileExistsError:
                    n += 1
                    path = base.with_name(f"{base.name}-{n}")
        else:
            path = Path(run_dir)
            if path.exists() and not path.is_dir():
                raise RunError(f"{path}: is a file, not a run directory")
            if path.exists() and any(path.iterdir()):
                raise RunError(
                    f"{path}: not a run directory (no config.json) and not empty; "
                    "give a new or empty directory, or a run directory to resume"
                )
            path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        write_json(path / "config.json", saved_config(cfg, stage))
        run.set_status("running")
        return run

    @classmethod
    def open(cls, run_dir: str | Path) -> Run:
        """An existing run; fails with a clear message if the directory is not a run."""
        path = Path(run_dir)
        if not path.is_dir():
            raise RunError(f"{path}: no such run directory")
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise RunError(f"{path}: not a run directory (no config.json)")
        try:
            data = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{cfg_file}: corrupted ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, dict) or data.get("stage") not in STAGES:
            raise RunError(f"{cfg_file}: not a run config (missing or unknown 'stage')")
        return cls(path)

    @classmethod
    def create_or_resume(cls, cfg: LabConfig, stage: str, run_dir: str | Path | None) -> Run:
        """Resume `run_dir` if it is a run of this stage with the same config, else create."""
        if run_dir is not None and (Path(run_dir) / "config.json").exists():
            run = cls.open(run_dir)
            if run.stage != stage:
                raise RunError(f"{run.dir}: is a '{run.stage}' run, not '{stage}'")
            saved, new = run.raw_config(), saved_config(cfg, stage)
            diff = sorted(set(config_diff(saved, new, stage)) - NOT_IDENTITY)
            if diff:
                raise RunError(
                    f"{run.dir}: cannot resume with a different config ({', '.join(diff)} "
                    "differ); start a new run directory instead"
                )
            return run
        return cls.create(cfg, stage, run_dir)

    # ------------------------------------------------------------------ reading
    def raw_config(self) -> dict[str, Any]:
        return json.loads((self.dir / "config.json").read_text())

    @property
    def stage(self) -> str:
        return self.raw_config()["stage"]

    @property
    def config(self) -> LabConfig:
        data = self.raw_config()
        data.pop("stage", None)
        if isinstance(data.get("world"), dict):  # else apply() says what is wrong with it
            data["world"].pop("version", None)
        restore_off_keys(data)
        try:
            return from_dict(data, source=str(self.dir / "config.json"))
        except ConfigError as e:
            raise RunError(str(e)) from None

    @property
    def status(self) -> dict[str, Any]:
        """status.json; a file that is not a JSON object (truncated, edited by hand) reads as
        status "unreadable", so the run is neither reused nor resumed and every command still
        runs (it was a JSONDecodeError or AttributeError traceback in each)."""
        f = self.dir / "status.json"
        if not f.exists():
            return {"status": "unknown"}
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return {"status": "unreadable", "error": f"{f}: {e}"}
        if not isinstance(data, dict) or not isinstance(data.get("status", ""), str):
            return {"status": "unreadable", "error": f"{f}: not a status object"}
        return data

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged line of metrics.jsonl (a truncated last line from a kill is skipped)."""
        return _read_jsonl(self.dir / "metrics.jsonl")

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoint"

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    @property
    def done(self) -> bool:
        return self.status.get("status") == "done"

    @property
    def state(self) -> str:
        """status.json's status, except that a run marked running whose process on this host
        is gone (killed: SIGKILL, power loss, a closed notebook kernel) is "stopped". Like a
        failed run, it resumes from its checkpoint with --run-dir, or when its command runs
        again if latest_resumable finds it safe."""
        s = self.status
        status = s.get("status", "unknown")
        mine = s.get("host") == socket.gethostname() and isinstance(s.get("pid"), int)
        if status == "running" and mine and not _alive(s["pid"], s.get("pid_started")):
            return "stopped"
        return status

    def progress(self) -> dict[str, Any]:
        """How far a stepped stage (PPO) is, from its config and metrics.jsonl: {"state",
        "step" (the last logged), "steps" (ppo.steps), "s_per_step" (median time/rollout +
        time/update over the last 10 logged steps; None before the first), "eta_s"}."""
        rows = [r for r in self.metrics() if "time/rollout" in r]
        steps = int(self.raw_config().get(self.stage, {}).get("steps", 0))
        step = int(rows[-1]["step"]) if rows else 0
        recent = [r["time/rollout"] + r.get("time/update", 0.0) for r in rows[-10:]]
        per_step = statistics.median(recent) if recent else None
        eta = per_step * max(steps - step, 0) if per_step is not None else None
        return {
            "state": self.state,
            "step": step,
            "steps": steps,
            "s_per_step": per_step,
            "eta_s": eta,
        }

    # ------------------------------------------------------------------ writing
    def log(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Append sample rollouts (one JSON line each, with the step) to samples.jsonl."""
        with open(self.dir / "samples.jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps({"step": step, **r}, sort_keys=True) + "\n")

    def samples(self) -> list[dict[str, Any]]:
        """Every line of samples.jsonl (a truncated last line from a kill is skipped)."""
        return _read_jsonl(self.dir / "samples.jsonl")

    def truncate_metrics(self, step: int) -> None:
        """Drop lines logged after `step` (they belong to work a resume will redo)."""
        self._truncate("metrics.jsonl", self.metrics(), step)

    def truncate_samples(self, step: int) -> None:
        self._truncate("samples.jsonl", self.samples(), step)

    def _truncate(self, name: str, rows: list[dict[str, Any]], step: int) -> None:
        if not (self.dir / name).exists():
            return
        rows = [r for r in rows if r.get("step", 0) <= step]
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, self.dir / name)

    def set_status(self, status: str, **info: Any) -> None:
        current = self.status if (self.dir / "status.json").exists() else {}
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        current.update({"stage": self.raw_config()["stage"], "status": status, **info})
        current.setdefault("started", now)
        if status == "running":  # who runs it: Run.state tells a live run from a killed one
            pid = os.getpid()
            current.update(pid=pid, pid_started=_started(pid), host=socket.gethostname())
        if status in ("done", "failed"):
            current["finished"] = now
        write_json(self.dir / "status.json", current)

    def write_eval(self, data: dict[str, Any]) -> None:
        write_json(self.dir / "eval.json", data)


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, its start time at
    index 19), or None where there is no /proc (not Linux) or no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), to tell it from a later process
    that was given the same pid; None without /proc."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` (started at `started`, if known) still runs on this machine: it
    exists (signal 0 checks without sending), is not a zombie waiting to be reaped, and is
    not another process that got its pid since."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    fields = _proc_stat(pid)
    if fields is None:  # no /proc: signal 0 is all we know
        return True
    return fields[0] != "Z" and (started is None or _started(pid) == started)


def _read_jsonl(f: Path) -> list[dict[str, Any]]:
    rows = []
    if f.exists():
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# Keys added after runs had been made, each left out of config.json while it has its off
# value, so that a run made before the key existed matches its config and is reused; reading a
# run back (Run.config) puts the off value back, which is not the default where that is on:
OFF_VALUES: tuple[tuple[str, str, Any], ...] = (
    ("sft", "data", ""),  # no --data: the world's prompts
    ("rm", "data", ""),
    ("ppo", "data", ""),
    ("world", "rl_per_family", 0),  # PPO on the train prompts alone (default 1500)
    ("compare", "rl_sets", 0),  # an RM without the rl prompts' comparisons
    ("compare", "extra_response", ""),  # sampled responses only
    ("sft", "base_model", ""),  # the world's own base model
    ("rm", "backbone", ""),  # the RM on the SFT model
    ("rm", "likelihood_weight", 0.0),  # the paper's RM, without the likelihood term
    ("rm", "ensemble", []),  # a trained RM, not an ensemble of RM runs
    ("rm", "samples", "all"),  # an RM on every stored comparison
    ("ppo", "ema_decay", 0.0),  # the last weights as the policy, not their average
    ("ppo", "lr_warmup", 0),  # no warm-up of the policy's learning rate (default 10)
    ("ppo", "lr_end", 1.0),  # a constant learning rate after any warm-up
)


def restore_off_keys(data: dict[str, Any]) -> None:
    """Put back, with its off value, each key saved_config left out: a missing key means the
    run had it off (or ran before it existed), not the config's default."""
    for section, key, off in OFF_VALUES:
        if isinstance(data.get(section), dict) and key not in data[section]:
            data[section][key] = copy.copy(off)


def saved_config(cfg: LabConfig, stage: str) -> dict[str, Any]:
    """What a run's config.json holds: the stage, the resolved config, and the world's version
    under world.version, so a run made on an older world is never reused for a newer one."""
    data = {"stage": stage, **cfg.to_dict()}
    data["world"]["version"] = WORLD_VERSION
    for section, key, off in OFF_VALUES:  # left out, so runs made before the key existed match
        if data[section][key] == off:
            del data[section][key]
    if data["ppo"]["reward"] == "rm":  # the RM, the paper's reward: likewise
        del data["ppo"]["reward"], data["ppo"]["gold_scale"]
    for section in ("sft", "ppo"):  # no LoRA (lora_r 0): likewise, runs made before it match
        if not data[section]["lora_r"]:
            for key in LORA_KEYS:
                del data[section][key]
    return data


# Sections no other stage reads: a difference there does not make another stage's run
# different, and runs made before these sections existed still match. No stage reads
# `pipeline` (which runs the pipeline makes, not how any run is made).
OWN_SECTIONS = ("dpo", "grpo", "pipeline")
# The sections the first stages are made from (with the top-level keys but NOT_IDENTITY: seed).
# They never read a later stage's section, so `rlhf pipeline --set ppo.kl_coef=0.1` (or a
# changed rm value) reuses pretraining and SFT instead of training them again. Later stages
# (ppo, dpo, grpo) read every section but the other stages' OWN_SECTIONS.
MADE_FROM = {
    "pretrain": ("world", "pretrain"),
    "sft": ("world", "pretrain", "sft"),
    "rm": ("world", "pretrain", "sft", "compare", "rm"),
}
STAGE_SECTIONS = ("world", "pretrain", "sft", "compare", "rm", "ppo", *OWN_SECTIONS)
# Top-level keys that say where and how fast a run is made, not what it computes: a finished
# run is reused, and a stopped one resumed, whatever they were (threads reorder float sums only).
NOT_IDENTITY = frozenset({"threads", "workspace"})


def config_diff(saved: dict[str, Any], new: dict[str, Any], stage: str) -> list[str]:
    """The dotted keys where two saved configs of `stage` differ, leaving out the sections the
    stage is not made from: later stages' (MADE_FROM), other stages' own (OWN_SECTIONS)."""
    if stage in MADE_FROM:
        skip = set(STAGE_SECTIONS) - set(MADE_FROM[stage])
    else:
        skip = {s for s in OWN_SECTIONS if s != stage}
    return [k for k in _diff(saved, new) if k.split(".")[0] not in skip]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _get(data: Any, dotted: str) -> Any:
    """data["a"]["b"] for "a.b"; None where a level is missing or not a dict."""
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def list_runs(workspace: Path, stage: str | None = None) -> list[Run]:
    """Every run under <workspace>/runs, oldest first (skips directories that are not runs)."""
    runs: list[Run] = []
    root = Path(workspace) / "runs"
    for d in sorted(root.glob("*")) if root.exists() else []:
        try:
            run = Run.open(d)
        except RunError:
            continue
        if stage is None or run.stage == stage:
            runs.append(run)
    # config.json is written once, at creation: its mtime orders runs started in the same second
    return sorted(runs, key=lambda r: ((r.dir / "config.json").stat().st_mtime_ns, r.dir.name))


def run_stage(
    cfg: LabConfig, stage: str, run_dir: str | Path | None, body: Callable[[Run], None]
) -> Run:
    """Every stage's `train`: create or resume the run, return it at once if it is done, else
    run `body(run)`; an exception (Ctrl-C too) marks the run failed, resumable, and re-raises.

    Under a launcher (rlhf.distributed) the main process creates the run and every process
    runs `body` in it; the others return once the main process has finished writing."""
    check_length(cfg, stage)  # before the run directory: the length fails only in the report
    run = Run(dist.on_main(lambda: Run.create_or_resume(cfg, stage, run_dir).dir))
    if run.done:
        return run
    if dist.is_main():
        run.set_status("running")
    try:
        body(run)
    except BaseException as e:
        if dist.is_main():
            run.set_status("failed", error=f"{type(e).__name__}: {e}")
        raise
    dist.wait()  # eval.json and status.json are written
    return run


def latest_done(cfg: LabConfig, stage: str) -> Run | None:
    """The newest finished run of `stage` whose saved config equals `cfg` (reuse, don't retrain)."""
    want = saved_config(cfg, stage)
    for run in reversed(list_runs(cfg.workspace_dir, stage)):
        # Every run listed is in this workspace, however its config spelled it ("" with
        # $RLHF_WORKSPACE, or a path); a run trained on 2 threads serves a 1-thread config.
        if run.done and not set(config_diff(run.raw_config(), want, stage)) - NOT_IDENTITY:
            return run
    return None


# The stages a stage's run starts from: a run of theirs finished after it started makes it
# stale. The RM and DPO also read the lab store's comparisons, which an unfinished run has not
# recorded yet (eval.json does, at the end): they are not resumed automatically.
EARLIER = {
    "pretrain": (),
    "sft": ("pretrain",),
    "ppo": ("pretrain", "sft", "rm"),
    "grpo": ("pretrain", "sft", "rm"),
}


def latest_resumable(cfg: LabConfig, stage: str) -> Run | None:
    """The newest run of `stage` with this config that was interrupted (Run.state failed or
    stopped: Ctrl-C, a kill, a closed kernel) after saving a checkpoint, so that training it
    again resumes there instead of starting over; None when there is none or it may be stale.

    An unfinished run has no eval.json naming the runs it started from, so this is
    conservative: it must have started after every finished run of an EARLIER stage in the
    workspace had finished."""
    if stage not in EARLIER or getattr(getattr(cfg, stage), "data", ""):
        return None  # a data file (sft.data, ppo.data) may have changed since: start over
    want = saved_config(cfg, stage)
    runs = list_runs(cfg.workspace_dir)
    for run in reversed([r for r in runs if r.stage == stage]):
        if run.state not in ("failed", "stopped"):
            continue
        if set(config_diff(run.raw_config(), want, stage)) - NOT_IDENTITY:
            continue
        ckpt = run.checkpoint_dir
        if not (ckpt.is_dir() and any(ckpt.iterdir())):
            return None  # the newest interrupted one saved nothing: start over
        started = (run.dir / "config.json").stat().st_mtime_ns
        finished = [  # status.json is last written when a run finishes
            (r.dir / "status.json").stat().st_mtime_ns
            for r in runs
            if r.stage in EARLIER[stage] and r.done
        ]
        return run if all(t < started for t in finished) else None
    return None


def find_done(cfg: LabConfig, stage: str, sections: tuple[str, ...]) -> Run | None:
    """The newest finished run of `stage` whose config agrees with `cfg` on `sections` (e.g. the
    pretrain run an SFT run builds on: same world, same pretrain settings)."""
    want = saved_config(cfg, stage)
    for run in reversed(list_runs(cfg.workspace_dir, stage)):
        saved = run.raw_config()
        if run.done and all(not _diff(saved.get(k), want.get(k)) for k in sections):
            return run
    return None


# What a later stage's source run must agree on with its config: the sections it was made from.
# For the RM that includes compare (compare.policy_run tells the rounds of iterated collection
# apart: a PPO run of the first round must not start from the second round's RM).
UPSTREAM = {"sft": MADE_FROM["sft"], "rm": MADE_FROM["rm"]}


def upstream(cfg: LabConfig, stage: str, explicit: str = "", setting: str = "") -> Run:
    """The finished `stage` run ("sft" or "rm") a later stage starts from: `explicit` (a run
    directory, the value of the config field `setting`, e.g. ppo.sft_run) if given, else the
    newest finished one of this config (agreeing on UPSTREAM[stage]); a RunError naming the
    command that makes one. An explicit run must be finished, and for "rm" an RM run."""
    if explicit:
        run = Run.open(explicit)
        if stage == "rm" and run.stage != "rm":
            raise RunError(f"{run.dir}: {setting} needs an RM run; this is a '{run.stage}' run")
        if stage == "sft" and run.stage not in POLICY_STAGES:
            raise RunError(
                f"{run.dir}: {setting} needs a policy run (SFT, or a base, PPO, DPO or GRPO "
                f"policy); this is a '{run.stage}' run"
            )
        if not run.done:
            raise RunError(f"{run.dir}: {setting} needs a finished run; this one is {run.state}")
        # Another world's policy or RM reads other prompts with another tokenizer: the stage
        # would train on nonsense without an error (the RM of world seed 1 scoring answers to
        # world seed 0's questions, say).
        theirs = run.raw_config().get("world")
        if not isinstance(theirs, dict):
            raise RunError(f"{run.dir}/config.json: its 'world' is not a section; not a usable run")
        differ = sorted(_diff(theirs, saved_config(cfg, stage)["world"]))
        if differ:
            keys = ", ".join(f"world.{k}={_get(theirs, k)!r}" for k in differ[:4])
            keys += f" and {len(differ) - 4} more" if len(differ) > 4 else ""
            raise RunError(
                f"{run.dir}: {setting} is a run of another world than this config's (its "
                f"{keys}); pick a run of this world, or give the same --set world.* values"
            )
        return run
    run = find_done(cfg, stage, UPSTREAM[stage])
    if run is None:
        hint = f" (or set {setting})" if setting else ""
        sets = recipe_changes(cfg, UPSTREAM[stage])
        raise RunError(
            f"no finished {'RM' if stage == 'rm' else 'SFT'} run for this config in "
            f"{cfg.workspace_dir / 'runs'}; run: rlhf {stage} --recipe {cfg.recipe}{sets}{hint}"
        )
    return run


def recipe_changes(cfg: LabConfig, sections: tuple[str, ...]) -> str:
    """ " --set k=v ..." for each value of `sections` that differs from the recipe's: what a
    command in a hint must repeat to make the run this config looks for (without them,
    `rlhf sft --recipe R` reused the recipe's run and the same error came back)."""
    from rlhf.config import load

    try:
        recipe = load(cfg.recipe).to_dict()
    except ConfigError:  # a recipe file since moved: name no settings rather than wrong ones
        return ""
    now, out = cfg.to_dict(), []
    for section in sections:
        for key, value in now[section].items():
            if value != recipe[section].get(key):
                text = json.dumps(value) if isinstance(value, list | bool) else str(value)
                out.append(f" --set {shlex.quote(f'{section}.{key}={text}')}")
    return "".join(out)


def moved_source(run: Run, sources: dict[str, Run]) -> str | None:
    """Why a finished run should not be reused because a source it recorded in eval.json
    (name -> run: "sft_run", "rm_run") is not the one its config now resolves to, else None."""
    try:
        report = read_eval(run)
    except RunError:
        return None
    for name, now in sources.items():
        if report.get(name) and not same_run(report[name], now):
            return f"{run.dir} used {name} {report[name]}; this config now resolves to {now.dir}"
    return None


def recorded_run(recorded: str | os.PathLike, workspace: str | os.PathLike) -> Path:
    """The run directory a path recorded earlier names (a source run in eval.json, the policy
    of a stored comparison), found in `workspace`: <workspace>/runs/<its name> when that is the
    same run, copied or moved (a workspace copied or moved keeps its runs' names, unique in a
    workspace, while the absolute paths recorded in its files still name the old place), else
    the path as recorded. The same run: both hold the same config.json (written once, at
    creation), or the recorded place is gone."""
    path = Path(recorded)
    here = Path(workspace) / "runs" / path.name
    if path.parent.name != "runs" or path == here or not (here / "config.json").exists():
        return path
    try:
        same = (path / "config.json").read_bytes() == (here / "config.json").read_bytes()
    except OSError:  # moved: the recorded place is gone
        same = True
    return here if same else path


def named_run(path: str | os.PathLike, workspace: str | os.PathLike) -> Path:
    """The run directory a config value names (compare.policy_run): "runs/<name>" in the
    workspace, as the pipeline writes it, so that a copied or moved workspace names its own run
    and its configs still match; else the path as given (relative to the current directory),
    found in a copied or moved workspace by recorded_run."""
    given = Path(path)
    if not given.is_absolute() and (Path(workspace) / given / "config.json").exists():
        return Path(workspace) / given
    return recorded_run(given.resolve(), workspace)


def same_run(recorded: str | os.PathLike, run: Run) -> bool:
    """Whether a recorded run path names `run`, also in a copied or moved workspace
    (`recorded_run` in the run's own workspace)."""
    return recorded_run(recorded, run.dir.parent.parent) == run.dir


def read_eval(run: Run) -> dict[str, Any]:
    """The stage's own measurements (eval.json); a clear error if the run has none yet."""
    f = run.dir / "eval.json"
    if not f.exists():
        raise RunError(f"{run.dir}: no eval.json (the run has not finished)")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{f}: corrupted ({e.msg} at line {e.lineno})") from None


def ppo_runs_from(sft_run: Run, paths: Sequence[str | os.PathLike], why: str) -> list[Run]:
    """The runs at `paths`, each a finished PPO run trained from `sft_run` (its eval.json's
    sft_run); else a RunError naming the first that is not, ending with `why` (what the caller
    needs them for, e.g. "only policies from the same SFT weights can be averaged")."""
    runs = [Run.open(p) for p in paths]
    for run in runs:
        if run.stage != "ppo" or not run.done:
            raise RunError(f"{run.dir}: not a finished PPO run (--runs takes PPO runs)")
        start = read_eval(run).get("sft_run", "")
        if not start or not same_run(start, sft_run):
            raise RunError(
                f"{run.dir}: trained from {start or 'an unrecorded SFT run'}, not from "
                f"{sft_run.dir}; {why}"
            )
    return runs
