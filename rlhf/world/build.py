"""Build, save, verify and load the Tiny World.

    <workspace>/data/world-<hash>/        hash of the world config and WORLD_VERSION
        manifest.json      version, world config, sha256 of every file, stats
        corpus.jsonl       {"text"} pretraining documents
        heldout.jsonl      {"text"} held-out documents (perplexity: the alignment tax)
        prompts.jsonl      Prompt records (id, family, axis, split, instruction, meta)
        demonstrations.jsonl
        cloze.jsonl        fact-cloze items
        entities.json      countries, unknowns, misconceptions (what the gold labeler knows)
        labelers.json      simulated labelers (train and held-out groups)
        tokenizer/         byte-level BPE trained on corpus.jsonl

The build is deterministic (one seeded random.Random, sorted iteration, sorted JSON keys): the
same seed gives byte-identical files. It writes to a temporary directory and renames it, so a
killed build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Any

from tqdm.auto import tqdm

from rlhf.config import LabConfig, WorldConfig
from rlhf.errors import WorldDataError
from rlhf.files import atomic_dir
from rlhf.world.corpus import make_corpus
from rlhf.world.entities import FACT_ATTRS, Entities, make_entities
from rlhf.world.families import Family, Item, candidate_responses, make_families
from rlhf.world.gold import GoldLabeler
from rlhf.world.labelers import (
    Labeler,
    check_counts,
    is_plain_harmful,
    make_labelers,
    pairwise_agreement,
)
from rlhf.world.types import ClozeItem, Demonstration, Prompt

WORLD_VERSION = 5  # 4: labeler noise per kind of answer; 5: helpfulness-first training labelers
FILES = (
    "corpus.jsonl",
    "heldout.jsonl",
    "prompts.jsonl",
    "demonstrations.jsonl",
    "cloze.jsonl",
    "entities.json",
    "labelers.json",
)
SPLITS = ("train", "val", "test")
# Prompts of train-split combinations beyond the train prompts, for PPO and GRPO only
# (world.rl_per_family): no demonstration, comparison or agreement sample uses them.
RL_SPLIT = "rl"


def world_dir(cfg: LabConfig) -> Path:
    fields = asdict(cfg.world)
    if not fields["rl_per_family"]:  # off: left out, so worlds built before it keep their name
        del fields["rl_per_family"]
    key = json.dumps({"v": WORLD_VERSION, **fields}, sort_keys=True)
    return cfg.workspace_dir / "data" / f"world-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


# ------------------------------------------------------------------------- the World


class World:
    """A built world on disk. Cheap to open; files are read on first use."""

    def __init__(self, path: Path):
        self.dir = Path(path)
        self.manifest = _read_json(self.dir / "manifest.json")
        self.ents = Entities.from_dict(_read_json(self.dir / "entities.json"))
        self.gold = GoldLabeler(self.ents)
        self.families: dict[str, Family] = make_families(self.ents)
        labelers = [Labeler(**d) for d in _read_json(self.dir / "labelers.json")]
        self.labelers = [lab for lab in labelers if lab.group == "train"]
        self.heldout_labelers = [lab for lab in labelers if lab.group == "heldout"]
        self._prompts: list[Prompt] | None = None

    def stats(self) -> dict[str, Any]:
        return self.manifest["stats"]

    @property
    def config(self) -> WorldConfig:
        return WorldConfig(**self.manifest["config"])

    def train_documents(self) -> list[str]:
        return [r["text"] for r in _read_jsonl(self.dir / "corpus.jsonl", ("text",))]

    def heldout_documents(self) -> list[str]:
        return [r["text"] for r in _read_jsonl(self.dir / "heldout.jsonl", ("text",))]

    def tokenizer(self, padding_side: str = "right"):
        from rlhf.tokenizer import load_tokenizer

        tok = load_tokenizer(self.dir / "tokenizer")
        tok.padding_side = padding_side
        return tok

    def prompts(self, split: str | None = None, family: str | None = None) -> list[Prompt]:
        if self._prompts is None:
            fields = ("id", "family", "axis", "split", "instruction", "meta")
            self._prompts = [Prompt(**r) for r in _read_jsonl(self.dir / "prompts.jsonl", fields)]
        return [
            p
            for p in self._prompts
            if (split is None or p.split == split) and (family is None or p.family == family)
        ]

    def rl_prompts(self) -> list[Prompt]:
        """What PPO and GRPO sample from: the train prompts, then the 'rl' split's (prompts of
        further train-split combinations, world.rl_per_family; none when it is off)."""
        return self.prompts("train") + self.prompts(RL_SPLIT)

    def prompt(self, prompt_id: str) -> Prompt:
        for p in self.prompts():
            if p.id == prompt_id:
                return p
        raise WorldDataError(f"{self.dir / 'prompts.jsonl'}: no prompt with id '{prompt_id}'")

    def demonstrations(self, split: str | None = None) -> list[Demonstration]:
        fields = ("prompt_id", "prompt", "response", "labeler")
        demos = [Demonstration(**r) for r in _read_jsonl(self.dir / "demonstrations.jsonl", fields)]
        if split is None:
            return demos
        ids = {p.id for p in self.prompts(split)}
        return [d for d in demos if d.prompt_id in ids]

    def cloze_items(self, split: str | None = None) -> list[ClozeItem]:
        items = [
            ClozeItem(**r)
            for r in _read_jsonl(self.dir / "cloze.jsonl", ("context", "answer", "split"))
        ]
        return [c for c in items if split is None or c.split == split]

    def candidates(self, prompt: Prompt, k: int, rng: random.Random) -> list[str]:
        """k realistic responses of mixed quality for `prompt` (a stand-in policy)."""
        return candidate_responses(self.families[prompt.family], prompt.meta, k, rng)

    def respond(self, prompt: Prompt, kind: str, rng: random.Random) -> str:
        return self.families[prompt.family].respond(prompt.meta, kind, rng)


# ------------------------------------------------------------------------- build


def build_world(cfg: LabConfig, force: bool = False, progress: bool = True) -> World:
    """Build the world for `cfg.world` (or verify and open the one already built)."""
    out = world_dir(cfg)
    if out.exists() and not force:
        return load_world(cfg)
    wc = cfg.world
    check_counts(wc.n_labelers, wc.n_heldout_labelers)  # before the progress bar starts
    rng = random.Random(wc.seed)
    steps = tqdm(total=6, desc="world", disable=not progress)

    ents = make_entities(rng, wc.n_countries)
    fams = make_families(ents)
    prompts, forum_pool = _make_prompts(fams, wc, rng)
    steps.update()

    labelers = make_labelers(
        wc.n_labelers,
        wc.n_heldout_labelers,
        wc.labeler_noise,
        wc.tie_margin,
        rng,
        comply_quality=wc.comply_quality,
        refuse_quality=wc.refuse_quality,
    )
    train_labelers = [lab for lab in labelers if lab.group == "train"]
    demos = []
    # Its own stream, so the compliance draws leave the corpus and the splits as they were.
    comply_rng = random.Random(wc.seed + 2)
    for p in prompts:
        if p.split in ("test", RL_SPLIT):  # rl prompts have none: the draws stay as they were
            continue
        for _ in range(wc.demos_per_prompt):
            response = fams[p.family].respond(p.meta, "correct", rng)
            if is_plain_harmful(p) and comply_rng.random() < wc.comply_rate:
                # A helpfulness-first labeler does what the user asked (paper 3.4).
                response = fams[p.family].respond(p.meta, "rude", comply_rng)
            demos.append(Demonstration(p.id, p.text, response, rng.choice(train_labelers).id))
    cloze = _make_cloze(ents, prompts)
    steps.update()

    docs = make_corpus(ents, fams, forum_pool, wc.corpus_words, wc.fact_mentions, rng)
    n_heldout = max(1, round(len(docs) * wc.heldout_fraction))
    heldout, corpus = docs[:n_heldout], docs[n_heldout:]
    steps.update()

    with steps, atomic_dir(out) as tmp:
        _write_jsonl(tmp / "corpus.jsonl", [{"text": d} for d in corpus])
        _write_jsonl(tmp / "heldout.jsonl", [{"text": d} for d in heldout])
        _write_jsonl(tmp / "prompts.jsonl", [p.to_dict() for p in prompts])
        _write_jsonl(tmp / "demonstrations.jsonl", [asdict(d) for d in demos])
        _write_jsonl(tmp / "cloze.jsonl", [asdict(c) for c in cloze])
        _write_json(tmp / "entities.json", ents.to_dict())
        _write_json(tmp / "labelers.json", [lab.to_dict() for lab in labelers])

        from rlhf.tokenizer import save_tokenizer, train_tokenizer

        tok = train_tokenizer(corpus, wc.vocab_size)
        save_tokenizer(tok, tmp / "tokenizer")
        steps.update()

        gold = GoldLabeler(ents)
        agreement = measure_agreement(prompts, fams, gold, labelers, random.Random(wc.seed + 1))
        steps.update()
        stats = _stats(corpus, heldout, prompts, demos, cloze, tok, agreement)
        files = {name: _file_digest(tmp / name) for name in FILES}
        _write_json(
            tmp / "manifest.json",
            {"version": WORLD_VERSION, "config": asdict(wc), "files": files, "stats": stats},
        )
        steps.update()
    return World(out)


def load_world(cfg: LabConfig, verify: bool = True) -> World:
    """Open the built world for `cfg.world`; a missing or corrupted file is a clear error."""
    path = world_dir(cfg)
    hint = f"rebuild it with: rlhf world build --recipe {cfg.recipe} --force"
    manifest = path / "manifest.json"
    if not manifest.exists():
        raise WorldDataError(
            f"{path}: no Tiny World built here for this config; run: rlhf world build --recipe {cfg.recipe}"
        )
    m = _read_json(manifest)
    if m.get("version") != WORLD_VERSION:
        raise WorldDataError(
            f"{manifest}: world version {m.get('version')} != {WORLD_VERSION}; {hint}"
        )
    if verify:
        for name, want in m.get("files", {}).items():
            f = path / name
            if not f.exists():
                raise WorldDataError(f"{f}: missing; {hint}")
            if _file_digest(f) != want:
                raise WorldDataError(
                    f"{f}: corrupted (checksum differs from manifest.json); {hint}"
                )
        if not (path / "tokenizer" / "tokenizer.json").exists():
            raise WorldDataError(f"{path / 'tokenizer'}: missing; {hint}")
    return World(path)


def _make_prompts(
    fams: dict[str, Family], wc: WorldConfig, rng: random.Random
) -> tuple[list[Prompt], dict[str, list]]:
    """Split each family's combos between test, val and train (a combo lives in one split, so
    test holds entity combinations never trained on); test and val take at most two variants
    of a combo, train takes all. With world.rl_per_family above train_per_family, the 'rl'
    split takes the train-split combos left over (after the train prompts, the rest of the
    last train combo first) up to that many prompts in all; it draws nothing from `rng`, so
    every other file is as without it."""
    prompts: list[Prompt] = []
    forum_pool: dict[str, list] = {}
    want = {"test": wc.test_per_family, "val": wc.val_per_family, "train": wc.train_per_family}
    for name in sorted(fams):
        fam = fams[name]
        groups = fam.items(rng)
        rng.shuffle(groups)
        chosen: dict[str, list[Item]] = {s: [] for s in SPLITS}
        # A small family (few combos) keeps most of them for training: test takes at most
        # 20% of the combos and val 10%.
        cap = {
            "test": max(1, len(groups) // 5),
            "val": max(1, len(groups) // 10),
            "train": len(groups),
        }
        taken = dict.fromkeys(SPLITS, 0)
        used = 0  # groups taken by a split; the loop stops at the first no split takes
        for g in groups:
            open_ = [
                s
                for s in ("test", "val", "train")
                if len(chosen[s]) < want[s] and taken[s] < cap[s]
            ]
            if not open_:
                break
            split = open_[0]
            chosen[split] += g if split == "train" else g[:2]
            taken[split] += 1
            used += 1
        # The train combos' variants past train_per_family, then the combos no split took.
        rest = chosen["train"][want["train"] :] + [it for g in groups[used:] for it in g]
        n_rl = max(0, wc.rl_per_family - len(chosen["train"][: want["train"]]))
        limit = {**want, RL_SPLIT: n_rl}
        chosen[RL_SPLIT] = rest
        held = set()
        for split in (*SPLITS, RL_SPLIT):
            items = chosen[split][: limit[split]]
            for i, it in enumerate(items):
                prompts.append(
                    Prompt(
                        f"{name}-{split}-{i:04d}",
                        name,
                        fam.axis,
                        split,
                        it.instruction,
                        {**it.meta, "combo": list(it.combo)},
                    )
                )
                if split in ("val", "test"):
                    held.add(it.instruction)
        # The web asks what the world's users ask, except the val/test prompts themselves and
        # anything about unknown countries (they must never appear in the corpus).
        forum_pool[name] = [
            (it.instruction, it.meta)
            for g in groups
            for it in g
            if it.instruction not in held and not it.meta.get("unknown_country")
        ]
    return prompts, forum_pool


def _make_cloze(ents: Entities, prompts: list[Prompt]) -> list[ClozeItem]:
    split_of = {
        tuple(p.meta["combo"]): p.split
        for p in prompts
        if p.family == "facts" and p.split != RL_SPLIT  # an rl combo is a train combo
    }
    out = []
    for c in ents.countries:
        for attr, spec in FACT_ATTRS.items():
            sentence = spec["statements"][0].format(c=c.name, v="\x00")
            context = sentence.split("\x00")[0].rstrip()
            out.append(ClozeItem(context, c.facts[attr], split_of.get((c.name, attr), "train")))
    return out


def measure_agreement(
    prompts, fams, gold, labelers, rng: random.Random, n_prompts: int = 400
) -> dict[str, Any]:
    """Pairwise agreement between labelers on K = 4..9 realistic responses per prompt."""
    pool = [p for p in prompts if p.split == "train"]
    sample = rng.sample(pool, min(n_prompts, len(pool)))
    ranks: dict[str, list[list[int]]] = {lab.id: [] for lab in labelers}
    for p in sample:
        responses = candidate_responses(fams[p.family], p.meta, rng.randint(4, 9), rng)
        for lab in labelers:
            ranks[lab.id].append(lab.rank(p, responses, gold))
    train = [lab.id for lab in labelers if lab.group == "train"]
    held = [lab.id for lab in labelers if lab.group == "heldout"]
    tt = [pairwise_agreement(ranks[a], ranks[b]) for a, b in itertools.combinations(train, 2)]
    th = [pairwise_agreement(ranks[a], ranks[b]) for a in train for b in held]
    return {
        "prompts": len(sample),
        "train_train": round(mean(r for r, _ in tt), 4),
        "train_heldout": round(mean(r for r, _ in th), 4) if th else None,
        "pairs_per_labeler_pair": round(mean(n for _, n in tt)),
    }


def _stats(corpus, heldout, prompts, demos, cloze, tok, agreement) -> dict[str, Any]:
    n_tokens = sum(
        len(ids) + 1 for ids in tok(corpus, add_special_tokens=False)["input_ids"]
    )  # +1: EOS
    per = Counter((p.family, p.split) for p in prompts)
    families = sorted({p.family for p in prompts})
    axis = {p.family: p.axis for p in prompts}
    # What a policy trains on: the train prompts, and for PPO and GRPO the rl split's.
    trained = [p for p in prompts if p.split in ("train", RL_SPLIT)]
    train_parts = {part for p in trained for part in p.meta["combo"]}
    train_combos = {tuple(p.meta["combo"]) for p in trained}
    test = [p for p in prompts if p.split == "test"]
    # The rl split's column only in a world that has one (world.rl_per_family).
    splits = SPLITS + ((RL_SPLIT,) if any(p.split == RL_SPLIT for p in prompts) else ())
    held = [
        p
        for p in test
        if tuple(p.meta["combo"]) not in train_combos and set(p.meta["combo"]) <= train_parts
    ]
    return {
        "documents": len(corpus),
        "heldout_documents": len(heldout),
        "words": sum(len(d.split()) for d in corpus),
        "tokens": n_tokens,
        "vocab_size": len(tok),
        "prompts": {f: {s: per[(f, s)] for s in splits} for f in families},
        "axes": axis,
        "demonstrations": len(demos),
        "cloze_items": len(cloze),
        "test_heldout_combinations": round(len(held) / max(1, len(test)), 3),
        "labeler_agreement": agreement,
    }


# ------------------------------------------------------------------------- files


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise WorldDataError(f"{path}: missing; rebuild the world with: rlhf world build --force")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorldDataError(f"{path}: corrupted ({e})") from None


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        raise WorldDataError(f"{path}: missing; rebuild the world with: rlhf world build --force")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorldDataError(f"{path}: record {n} is not valid JSON ({e.msg})") from None
            missing = [k for k in fields if k not in r]
            if missing:
                raise WorldDataError(f"{path}: record {n} lacks field '{missing[0]}'")
            rows.append({k: r[k] for k in fields})
    return rows
