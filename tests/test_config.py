"""rlhf.config: defaults, recipes, overrides, and errors that name the source and the key."""

import dataclasses
import re

import pytest

from rlhf import config
from rlhf.errors import ConfigError


def test_defaults_resolve_without_a_recipe():
    cfg = config.load()
    assert cfg == config.LabConfig()
    assert cfg.pretrain.lr == 6e-3 and cfg.world.seed == 0


def test_every_field_has_help_text():
    rows = config.field_docs()
    keys = [key for key, _, _, _ in rows]
    assert "pretrain.lr" in keys and "world.labeler_noise" in keys and "threads" in keys
    missing = [key for key, _, help_, _ in rows if not help_.strip()]
    assert not missing, f"fields without help: {missing}"


@pytest.mark.parametrize("recipe", ["micro", "tiny"])
def test_shipped_recipes_load(recipe):
    cfg = config.load(recipe)
    assert cfg.recipe == recipe


def test_micro_is_small_and_tiny_uses_the_defaults():
    micro, tiny = config.load("micro"), config.load("tiny")
    assert micro.threads == 1 and micro.pretrain.max_steps == 30
    assert micro.world.corpus_words < tiny.world.corpus_words
    assert tiny.threads == 2
    assert (tiny.world, tiny.pretrain) == (config.WorldConfig(), config.PretrainConfig())


def _outside(meta):
    """Values just outside a field's bounds (one per bound), and one inside all of them."""
    out = [meta[n] + d for n, d in (("gt", 0), ("ge", -1), ("lt", 0), ("le", 1)) if n in meta]
    lo, hi = meta.get("gt", meta.get("ge")), meta.get("lt", meta.get("le"))
    inside = (
        (lo + hi) / 2 if lo is not None and hi is not None else lo + 1 if hi is None else hi - 1
    )
    return out, inside


def _bounded_fields():
    """(dotted key, type, metadata) of every field with bounds."""
    rows = []
    for key, default, _, allowed in config.field_docs():
        if allowed:
            head, _, name = key.rpartition(".")
            section = getattr(config.LabConfig(), head) if head else config.LabConfig()
            f = {f.name: f for f in dataclasses.fields(section)}[name]
            rows.append((key, type(default), f.metadata))
    return rows


def test_every_default_and_shipped_recipe_is_within_its_bounds():
    # load() checks every value it sets; the defaults are checked here, value by value.
    for key, _, meta in _bounded_fields():
        head, _, name = key.rpartition(".")
        value = getattr(getattr(config.LabConfig(), head) if head else config.LabConfig(), name)
        config.check_bounds(value, meta, "default", key)
    for recipe in sorted(config.RECIPES_DIR.glob("*.yaml")):
        config.load(recipe.stem)


def test_every_bound_rejects_the_value_outside_it_and_takes_the_one_inside():
    rows = _bounded_fields()
    keys = {k for k, _, _ in rows}
    assert {"ppo.lr", "ppo.kl_coef", "ppo.temperature", "ppo.batch_size", "ppo.lam"} <= keys
    for key, kind, meta in rows:
        if "choices" in meta:
            with pytest.raises(ConfigError, match=rf"'{key}' must be one of"):
                config.load(None, [f"{key}=nonsense"])
            config.load(None, [f"{key}={meta['choices'][-1]}"])
            continue
        outside, inside = _outside(meta)
        for value in outside:
            text = f"{key}={kind(value)}"
            with pytest.raises(ConfigError, match=rf"--set {re.escape(text)}: '{key}' must be"):
                config.load(None, [text])
        assert getattr_dotted(config.load(None, [f"{key}={kind(inside)}"]), key) == inside


def getattr_dotted(obj, key):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def test_bound_errors_name_the_source_and_the_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load("micro", ["ppo.lr=-1"])
    assert str(e.value) == "--set ppo.lr=-1: 'ppo.lr' must be > 0, got -1.0"
    with pytest.raises(ConfigError) as e:
        config.load("micro", ppo__lam=1.5)
    assert str(e.value) == "keyword argument ppo__lam: 'ppo.lam' must be >= 0, <= 1, got 1.5"
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("ppo:\n  reward: golden\n")
    with pytest.raises(ConfigError) as e:
        config.load(recipe)
    assert str(e.value) == f"{recipe}: 'ppo.reward' must be one of rm, gold, labelers, got 'golden'"


def test_a_saved_config_is_read_whatever_its_bounds():
    # config.json records what ran, even a value a later bound rejects
    data = config.LabConfig().to_dict()
    data["ppo"]["kl_coef"] = -0.5
    assert config.from_dict(data).ppo.kl_coef == -0.5


def test_doc_rejects_an_unknown_bound():
    with pytest.raises(TypeError, match="unknown bounds"):
        config.doc(1, "help", positive=True)


def test_set_overrides_parse_int_float_bool_and_str():
    cfg = config.load(
        "micro",
        [
            "seed=7",
            "pretrain.lr=1e-3",  # PyYAML reads 1e-3 as text; float fields accept it
            "pretrain.epochs=3",  # an int where a float is expected
            "world.labeler_noise=0.5",
            "workspace=/tmp/ws",
            "ppo.sft_run=123",  # a str field takes the text even if it looks like a number
        ],
    )
    assert cfg.seed == 7
    assert cfg.pretrain.lr == 1e-3
    assert cfg.pretrain.epochs == 3.0 and isinstance(cfg.pretrain.epochs, float)
    assert cfg.world.labeler_noise == 0.5
    assert cfg.workspace == "/tmp/ws"
    assert cfg.ppo.sft_run == "123"


def test_set_refuses_a_leading_zero_where_a_number_is_meant():
    with pytest.raises(ConfigError, match=r"--set ppo.steps=010: 010 has a leading zero, .* 8; "):
        config.load("micro", ["ppo.steps=010"])
    with pytest.raises(ConfigError, match=r"write -10 or -8"):
        config.load("micro", ["ppo.kl_coef=-010"])
    assert config.load("micro", ["ppo.sft_run=0123"]).ppo.sft_run == "0123"  # text is text
    assert config.load("micro", ["seed=0", "ppo.steps=1_000"]).ppo.steps == 1000


def test_bool_fields_take_only_bools():
    @dataclasses.dataclass
    class Flags:
        on: bool = config.doc(False, "a switch")

    cfg = Flags()
    config.set_key(cfg, "on", True, source="test")
    assert cfg.on is True
    with pytest.raises(ConfigError, match="'on' must be bool"):
        config.set_key(cfg, "on", 1, source="test")


def test_keyword_overrides_and_precedence():
    cfg = config.load("micro", ["pretrain.lr=0.01"], pretrain__lr=0.02, **{"world.seed": 3})
    assert cfg.pretrain.lr == 0.02  # keyword arguments come last
    assert cfg.world.seed == 3
    assert cfg.pretrain.max_steps == 30  # the recipe still applies


def test_unknown_key_in_recipe_names_file_and_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("pretrain:\n  hidden_size: 32\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        config.load(recipe)
    assert str(recipe) in str(e.value)
    assert "'pretrain.learning_rate'" in str(e.value)
    assert "lr" in str(e.value)  # lists the keys that exist


def test_unknown_top_level_section(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("rlfh:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'rlfh'"):
        config.load(recipe)


def test_wrong_type_names_key_and_expected_type(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("world:\n  n_countries: many\n")
    with pytest.raises(ConfigError) as e:
        config.load(recipe)
    msg = str(e.value)
    assert str(recipe) in msg and "'world.n_countries' must be int" in msg and "'many'" in msg
    with pytest.raises(
        ConfigError, match=r"--set pretrain.max_steps=1.5: 'pretrain.max_steps' must be int"
    ):
        config.load(None, ["pretrain.max_steps=1.5"])
    with pytest.raises(ConfigError, match=r"'world' is a section"):
        config.load(None, ["world=3"])
    with pytest.raises(ConfigError, match=r"'threads' must be int, got True"):
        config.load(None, ["threads=true"])


def test_unknown_recipe_name_lists_known_recipes():
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope' \(known: .*micro.*tiny"):
        config.load("nope")
    with pytest.raises(ConfigError, match="recipe file not found"):
        config.load("missing/recipe.yaml")


def test_malformed_yaml_is_one_line_naming_file_and_line(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("world:\n  seed: [1, 2\npretrain: {}\n")
    with pytest.raises(ConfigError) as e:
        config.load(recipe)
    msg = str(e.value)
    assert msg.startswith(f"{recipe}: not valid YAML") and "line" in msg
    assert "\n" not in msg


def test_recipe_must_be_a_mapping(tmp_path):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(recipe)


def test_empty_section_and_empty_file_are_fine(tmp_path):
    recipe = tmp_path / "empty.yaml"
    recipe.write_text("# nothing yet\nworld:\n")
    assert config.load(recipe).world == config.WorldConfig()
    recipe.write_text("")
    assert config.load(recipe).pretrain == config.PretrainConfig()


def test_set_without_equals_sign():
    with pytest.raises(ConfigError, match=r"--set pretrain.lr: expected key=value"):
        config.load("micro", ["pretrain.lr"])


def test_unknown_keyword_override():
    with pytest.raises(
        ConfigError, match=r"keyword argument pretrain__lrate: unknown key 'pretrain.lrate'"
    ):
        config.load(pretrain__lrate=1.0)


def test_from_dict_round_trips_to_dict():
    cfg = config.load("micro", ["pretrain.lr=1e-3", "workspace=/tmp/x"])
    assert config.from_dict(cfg.to_dict()) == cfg


def test_workspace_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("RLHF_WORKSPACE", raising=False)
    assert config.load().workspace_dir == config.REPO_ROOT / "lab"
    monkeypatch.setenv("RLHF_WORKSPACE", str(tmp_path / "env"))
    assert config.load().workspace_dir == tmp_path / "env"
    assert config.load(workspace=str(tmp_path / "cfg")).workspace_dir == tmp_path / "cfg"


def test_pipeline_extras_default_to_none_and_the_recipes_choose_theirs():
    assert config.LabConfig().pipeline.extras == []  # the paper's runs only
    assert config.load("tiny").pipeline.extras == ["dpo", "grpo"]  # within make demo's budget
    assert config.load("micro").pipeline.extras == ["dpo", "grpo", "lora"]  # seconds each
    cfg = config.load("tiny", ["pipeline.extras=[lora]", "pipeline.lora_r=4"])
    assert (cfg.pipeline.extras, cfg.pipeline.lora_r) == (["lora"], 4)
    with pytest.raises(ConfigError, match="'pipeline.extras' must be list"):
        config.load("tiny", ["pipeline.extras=dpo"])


def test_workspace_option_names_any_workspace_but_the_default(tmp_path):
    """A command printed for the user to run next (the dashboard, after `make demo`) must
    open the workspace just filled, not the empty default one."""
    assert config.workspace_option(config.REPO_ROOT / "lab") == ""
    assert config.workspace_option(config.REPO_ROOT / "lab" / ".." / "lab") == ""
    assert config.workspace_option(tmp_path) == f" --workspace {tmp_path}"
    spaced = tmp_path / "my runs"
    assert config.workspace_option(spaced) == f" --workspace '{spaced}'"


def test_every_stage_reports_on_all_test_prompts_on_tiny():
    """Each stage's own report judges the same test prompts as `rlhf eval` (all of them, 340
    on tiny): DPO's and GRPO's read 200 and printed a win rate the results table did not."""
    cfg = config.load("tiny")
    counts = {s: getattr(cfg, s).eval_prompts for s in ("pretrain", "sft", "ppo", "dpo", "grpo")}
    assert set(counts.values()) == {1000}, counts  # "at most all": more than any split holds


@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", ".inf", "nan"])
def test_a_float_must_be_finite(value):
    """`--set sft.lr=1e400` (inf) passed `lr > 0` and trained a model of NaNs."""
    with pytest.raises(ConfigError, match=r"--set sft.lr=.*'sft.lr' must be"):
        config.load("micro", [f"sft.lr={value}"])
    with pytest.raises(ConfigError, match="must be a finite number"):
        config.load("micro", sft__lr=float("inf"))


@pytest.mark.parametrize("section", config.GENERATING)
def test_a_response_longer_than_the_models_context_fails_before_the_stage_starts(section, tmp_path):
    """`--set sft.max_new_tokens=500` trained SFT to the end, then failed in its report with a
    traceback and left a failed run; now each generating stage checks its length against the
    world model's context before anything (the world, upstream runs, a run directory)."""
    from rlhf import compare, dpo, grpo, ppo, pretrain, sft

    block = config.load("micro").pretrain.block_size
    cfg = config.load("micro", [f"{section}.max_new_tokens={block}"], workspace=str(tmp_path))
    start = {"compare": compare.collect, "pretrain": pretrain.train, "sft": sft.train}
    start |= {"ppo": ppo.train, "dpo": dpo.train, "grpo": grpo.train}
    with pytest.raises(ConfigError, match=rf"'{section}.max_new_tokens' is {block}: .* {block} "):
        start[section](cfg, progress=False)
    assert list(tmp_path.iterdir()) == []
    config.check_length(config.load("micro", [f"{section}.max_new_tokens={block - 1}"]), section)
    # A real model's context is its own: checked when it loads.
    real = config.load("micro", [f"{section}.max_new_tokens=500", "sft.base_model=gpt2"])
    config.check_length(real, section)


def test_grpo_loss_type_is_one_trl_knows():
    """`grpo.loss_type=bogus` failed inside TRL mid-run, with a traceback and a failed run."""
    with pytest.raises(ConfigError, match=r"'grpo.loss_type' must be one of grpo, dapo"):
        config.load("micro", ["grpo.loss_type=bogus"])
    assert config.load("micro", ["grpo.loss_type=dr_grpo"]).grpo.loss_type == "dr_grpo"


def test_heads_that_do_not_split_the_hidden_size_fail_before_a_run(tmp_path):
    """It raised a ValueError traceback from inside the pretraining run, leaving it failed."""
    from rlhf import pretrain

    cfg = config.load("micro", ["pretrain.num_heads=3"], workspace=str(tmp_path))
    with pytest.raises(ConfigError, match=r"hidden_size=\d+ is not a multiple of .*num_heads=3"):
        pretrain.train(cfg, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_shipped_recipe_given_as_a_path_is_its_name(tmp_path):
    """`--recipe lab/recipes/../recipes/micro.yaml` made a recipe called by its path, so no
    finished run was reused: every stage trained again."""
    spelled = config.RECIPES_DIR / ".." / "recipes" / "micro.yaml"
    assert config.load(spelled).recipe == "micro"
    own = tmp_path / "micro.yaml"
    own.write_text((config.RECIPES_DIR / "micro.yaml").read_text())
    assert config.load(own).recipe == str(own)  # a user's file stays a path


def test_a_recipe_that_is_no_text_file_is_one_line(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin.yaml: not a text file"):
        config.load(binary)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"dir.yaml: cannot read the recipe"):
        config.load(tmp_path / "dir.yaml")
