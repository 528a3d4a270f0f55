"""The `rlhf` command: its contract (commands, options, last line = run dir) and its errors
(one line on stderr, `error: ...`, exit code 2, never a traceback)."""

import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from rlhf import cli, config
from rlhf.errors import RunError
from rlhf.runs import Run

ROOT = Path(__file__).resolve().parents[1]


def rlhf(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter (`python -m rlhf` is the console script)."""
    env = {"PATH": "/usr/bin:/bin", "RLHF_WORKSPACE": str(tmp_path / "ws")}
    return subprocess.run(
        [sys.executable, "-m", "rlhf", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_help_lists_the_commands_without_importing_torch(tmp_path):
    out = rlhf("--help", tmp_path=tmp_path)
    assert out.returncode == 0
    for command in ("world", "pretrain", "config", "--workspace"):
        assert command in out.stdout
    probe = "import sys, rlhf.cli; rlhf.cli.build_parser(); print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert imported.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["config", "show", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["config", "show", "--set", "pretrain.lrate=1"], "unknown key 'pretrain.lrate'"),
        (["config", "show", "--set", "pretrain.lr=fast"], "'pretrain.lr' must be float"),
        (["config", "show", "--set", "pretrain.lr"], "--set pretrain.lr: expected key=value"),
        (["world", "build", "--recipe", "missing.yaml"], "recipe file not found: missing.yaml"),
        (["pretrain", "--set", "threads=two"], "'threads' must be int"),
        (["ppo", "--set", "ppo.lr=-1"], "--set ppo.lr=-1: 'ppo.lr' must be > 0, got -1.0"),
        (["ppo", "--set", "ppo.batch_size=0"], "'ppo.batch_size' must be >= 1, got 0"),
        (["rm", "--set", "compare.top_p=1.5"], "'compare.top_p' must be > 0, <= 1, got 1.5"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["world"], "required"),
        (["pretrain", "--bogus"], "unrecognized arguments: --bogus"),
        (["dashboard", "--port", "99999"], "'99999' is not a port number (1-65535)"),
        (["ppo", "--new", "--run-dir", "r"], "--new trains another run, --run-dir resumes one"),
        (["--workspace", "", "sft"], "--workspace is empty (an unset shell variable?)"),
        (["ppo", "--set", "recipe=tiny"], "'recipe' is the recipe resolved from; use --recipe"),
        (["world", "build", "--set", "world.vocab_size=10"], "must be >= 258, got 10"),
        (
            ["world", "build", "--recipe", "micro", "--set", "world.n_labelers=10"],
            "world.n_labelers=10 + world.n_heldout_labelers=3: the world has 11 labeler personas",
        ),
    ],
)
def test_bad_input_is_one_line_error_with_exit_code_2(args, expected, tmp_path):
    out = rlhf(*args, tmp_path=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("recipe_text", "expected"),
    [
        ("pretrain:\n  hidden: 3\n", "unknown key 'pretrain.hidden'"),
        ("world:\n  seed: [1, 2\n", "not valid YAML"),
        ("world:\n  n_countries: lots\n", "'world.n_countries' must be int"),
        # PyYAML reads these without a word: the first ppo section vanished, 010 was 8
        ("ppo:\n  steps: 3\nsft:\n  lr: 1e-4\nppo:\n  lr: 1e-5\n", "'ppo' is given twice (line 5"),
        ("ppo:\n  steps: 010\n", "010 has a leading zero, which YAML reads as the octal number 8"),
    ],
)
def test_bad_recipe_file_error_names_the_file(recipe_text, expected, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(recipe_text)
    out = rlhf("config", "show", "--recipe", str(recipe), tmp_path=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"error: {recipe}: ") and expected in line


def test_config_show_prints_the_resolved_config_as_a_loadable_recipe(tmp_path, capsys):
    assert cli.main(["config", "show", "--recipe", "micro", "--set", "pretrain.lr=1e-3"]) == 0
    shown = capsys.readouterr().out
    data = yaml.safe_load(shown)
    expected = config.load("micro", ["pretrain.lr=1e-3"])
    assert data == expected.to_dict()
    saved = tmp_path / "saved.yaml"
    saved.write_text(shown)
    again = config.load(saved)
    again.recipe = expected.recipe
    assert again == expected


def test_workspace_option_before_or_after_the_command(tmp_path, capsys):
    cli.main(["--workspace", str(tmp_path / "a"), "config", "show"])
    assert yaml.safe_load(capsys.readouterr().out)["workspace"] == str(tmp_path / "a")
    cli.main(["--workspace", str(tmp_path / "a"), "config", "show", "--workspace", "b"])
    assert yaml.safe_load(capsys.readouterr().out)["workspace"] == "b"


def test_config_docs_lists_every_field_with_default_and_help(capsys):
    assert cli.main(["config", "docs"]) == 0
    out = capsys.readouterr().out
    for key, default, help_, allowed in config.field_docs():
        assert f"{key} ({type(default).__name__}) = {default!r}" in out
        assert help_ in out
        assert not allowed or f"{help_} (allowed: {allowed})" in out
    assert "    PPO clip range of the policy ratio (paper: 0.2). (allowed: > 0)" in out


def test_config_docs_marks_what_a_recipe_changes(capsys):
    cli.main(["config", "docs", "--recipe", "micro"])
    assert "pretrain.max_steps (int) = 0  [micro: 30]" in capsys.readouterr().out


def test_docs_config_md_is_up_to_date(capsys):
    cli.main(["config", "docs", "--format", "markdown"])
    generated = capsys.readouterr().out
    assert (ROOT / "docs" / "config.md").read_text() == generated, "run `make docs`"


# ---------------------------------------------------------------- stages, with fakes


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_WORKSPACE", str(tmp_path / "ws"))
    return tmp_path / "ws"


@pytest.fixture
def threads():
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


class FakeWorld:
    def __init__(self, cfg, force):
        self.dir = cfg.workspace_dir / "data" / "world"
        self.cfg, self.force = cfg, force

    def stats(self):
        return {
            "tokens": 1_234_567,
            "documents": 4321,
            "prompts": {"arithmetic": {"test": 10, "train": 20, "val": 5}},
            "labeler_agreement": 0.7312,
        }


def test_world_build_prints_stats_and_the_world_dir(workspace, monkeypatch, capsys):
    built = []

    def build_world(cfg, force=False):
        built.append(FakeWorld(cfg, force))
        return built[-1]

    monkeypatch.setitem(sys.modules, "rlhf.world", types.SimpleNamespace(build_world=build_world))
    argv = ["world", "build", "--recipe", "micro", "--set", "world.seed=3", "--force"]
    assert cli.main(argv) == 0
    (world,) = built
    assert world.force and world.cfg.world.seed == 3 and world.cfg.recipe == "micro"
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "tokens:            1,234,567",
        "documents:         4,321",
        "labeler_agreement: 0.7312",
    ]
    assert lines[lines.index("prompts:") + 1].split() == ["train", "val", "test"]
    assert lines[lines.index("prompts:") + 2].split() == ["arithmetic", "20", "5", "10"]
    assert lines[-1] == f"world: {workspace / 'data' / 'world'}"


def fake_pretrain(monkeypatch, train):
    monkeypatch.setitem(sys.modules, "rlhf.pretrain", types.SimpleNamespace(train=train))


def test_pretrain_prints_the_run_dir_last_and_sets_threads(workspace, monkeypatch, capsys, threads):
    seen = {}

    def train(cfg, run_dir=None):
        seen.update(cfg=cfg, threads=threads.get_num_threads())
        print("step 10 loss 3.2")
        return Run.create_or_resume(cfg, "pretrain", run_dir)

    fake_pretrain(monkeypatch, train)
    assert cli.main(["pretrain", "--recipe", "micro", "--set", "pretrain.max_steps=5"]) == 0
    run_dir = Path(capsys.readouterr().out.splitlines()[-1])
    assert Run.open(run_dir).config.pretrain.max_steps == 5
    assert run_dir.parent == workspace / "runs"
    assert seen["threads"] == seen["cfg"].threads == 1

    given = workspace / "mine"
    assert cli.main(["pretrain", "--recipe", "micro", "--run-dir", str(given)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(given)


def test_pretrain_lab_error_is_one_line(workspace, monkeypatch, capsys, threads):
    def train(cfg, run_dir=None):
        raise RunError(f"{run_dir}: cannot resume with a different config (pretrain.lr differ)")

    fake_pretrain(monkeypatch, train)
    assert cli.main(["pretrain", "--recipe", "micro", "--run-dir", "r1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: r1: cannot resume with a different config (pretrain.lr differ)\n"


def test_pretrain_interrupted_says_how_to_resume(workspace, monkeypatch, capsys, threads):
    def train(cfg, run_dir=None):
        Run.create_or_resume(cfg, "pretrain", run_dir)
        raise KeyboardInterrupt

    fake_pretrain(monkeypatch, train)
    assert cli.main(["pretrain", "--recipe", "micro", "--set", "seed=4"]) == 130
    err = capsys.readouterr().err.strip()
    prefix = "interrupted; resume with: rlhf pretrain --recipe micro --set seed=4 --run-dir "
    assert err.startswith(prefix)
    run_dir = Path(err.removeprefix(prefix))
    assert Run.open(run_dir).config.seed == 4

    given = str(workspace / "given")
    assert cli.main(["pretrain", "--recipe", "micro", "--run-dir", given]) == 130
    assert capsys.readouterr().err.strip().endswith(f"--recipe micro --run-dir {given}")


def test_pretrain_interrupted_before_a_run_exists(workspace, monkeypatch, capsys, threads):
    def train(cfg, run_dir=None):
        raise KeyboardInterrupt

    fake_pretrain(monkeypatch, train)
    assert cli.main(["pretrain", "--recipe", "micro"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_dashboard_runs_streamlit_on_localhost(workspace, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    assert cli.main(["dashboard", "--port", "8600"]) == 0
    ((cmd, env),) = calls
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert env["RLHF_WORKSPACE"] == str(workspace)


def test_stage_reuses_a_finished_run_with_the_same_config(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    base = ["--workspace", str(tmp_path), "pretrain", "--recipe", "micro"]
    assert cli.main(base) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli.main(base) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("reusing finished run") and out[-1] == first
    assert cli.main([*base, "--new"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] != first


def test_rm_command_after_sft_and_compare(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    ws = ["--workspace", str(tmp_path)]
    for stage in ("pretrain", "sft"):
        assert cli.main([*ws, stage, "--recipe", "micro"]) == 0
    capsys.readouterr()
    assert cli.main([*ws, "rm", "--recipe", "micro"]) == 2  # no comparisons yet
    assert "rlhf compare --recipe micro" in capsys.readouterr().err
    assert cli.main([*ws, "compare", "--recipe", "micro"]) == 0
    assert "labeler agreement" in capsys.readouterr().out
    assert cli.main([*ws, "compare", "--recipe", "micro"]) == 0  # reuses, adds nothing
    assert "reusing stored comparisons" in capsys.readouterr().out
    assert cli.main([*ws, "rm", "--recipe", "micro"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("accuracy val_heldout_labelers") for line in out)
    assert (Path(out[-1]) / "model" / "reward_bias.json").is_file()
    assert cli.main([*ws, "rm", "--recipe", "micro"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == out[-1]  # reused

    # Stage 3 on top: PPO prints its report and the run dir last; PPO-ptx is another run.
    assert cli.main([*ws, "ppo", "--recipe", "micro"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("win rate vs SFT (gold)") for line in out)
    assert Path(out[-1]).name.startswith("ppo__micro__0__")
    assert (Path(out[-1]) / "metrics.jsonl").is_file()
    assert cli.main([*ws, "ppo", "--recipe", "micro", "--set", "ppo.ptx_coef=1.0"]) == 0
    ptx = capsys.readouterr().out.strip().splitlines()[-1]
    assert ptx != out[-1]


def test_a_stage_command_resumes_the_interrupted_run_of_its_config(
    workspace, monkeypatch, capsys, threads
):
    """Run again after a Ctrl-C, `rlhf pretrain` (any stage rlhf.runs.latest_resumable covers)
    resumes the interrupted run from its checkpoint; --new starts another; interrupted again,
    it names the run it resumed."""
    seen = []

    def train(cfg, run_dir=None):
        seen.append(run_dir)
        run = Run.create_or_resume(cfg, "pretrain", run_dir)
        run.checkpoint_dir.mkdir(exist_ok=True)
        (run.checkpoint_dir / "state.json").write_text("{}")
        run.set_status("failed", error="KeyboardInterrupt: ")  # as rlhf.runs.run_stage does
        raise KeyboardInterrupt

    fake_pretrain(monkeypatch, train)
    argv = ["pretrain", "--recipe", "micro"]
    assert cli.main(argv) == 130
    interrupted = Path(capsys.readouterr().err.strip().split("--run-dir ")[-1])
    assert cli.main(argv) == 130
    out, err = capsys.readouterr()
    assert seen[-1] == interrupted
    assert f"resuming interrupted run {interrupted} from its checkpoint" in out
    assert err.strip().endswith(f"--run-dir {interrupted}")
    assert cli.main([*argv, "--new"]) == 130
    assert seen[-1] is None


@pytest.mark.parametrize("command", ["eval", "pipeline"])
def test_results_out_onto_a_file_fails_before_anything_runs(command, tmp_path):
    """`--out` naming a file (or a folder under one) failed with a FileExistsError traceback
    when the results were written: for the pipeline, after every stage had run."""
    log = tmp_path / "pipe.log"
    log.write_text("mine\n")
    for out in (log, log / "results"):
        args = ["--workspace", str(tmp_path / "ws"), command, "--recipe", "micro"]
        args += ["--runs", str(tmp_path)] if command == "eval" else []
        done = rlhf(*args, "--out", str(out), tmp_path=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"{log} is a file, not a folder for the results" in done.stderr
    assert log.read_text() == "mine\n" and not (tmp_path / "ws").exists()


def test_a_data_path_set_by_hand_is_made_absolute_as_data_makes_it(tmp_path):
    """`rlhf sft --data demos.jsonl` records an absolute path; `--set sft.data=demos.jsonl`
    for a later stage kept it relative, never matched that run, and gave the same hint again."""
    out = rlhf("ppo", "--recipe", "micro", "--set", "sft.data=demos.jsonl", tmp_path=tmp_path)
    assert out.returncode == 2 and "no finished SFT run" in out.stderr
    assert f"run: rlhf sft --recipe micro --set sft.data={ROOT / 'demos.jsonl'}" in out.stderr


def test_a_workspace_that_is_a_file_or_not_writable_is_one_line(tmp_path, monkeypatch, capsys):
    """NotADirectoryError and PermissionError tracebacks (a log file given as --workspace, a
    read-only copy of a workspace)."""
    from rlhf import cli

    log = tmp_path / "pipe.log"
    log.write_text("mine\n")
    assert cli.main(["--workspace", str(log), "sft", "--recipe", "micro"]) == 2
    assert f"error: workspace {log}: a file, not a folder" in capsys.readouterr().err

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "ws" / "runs"))

    monkeypatch.setattr(cli.config, "load", denied)  # as root here, no folder is read-only
    assert cli.main(["--workspace", str(tmp_path / "ws"), "sft", "--recipe", "micro"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'ws' / 'runs'}: permission denied (Permission denied)\n"
