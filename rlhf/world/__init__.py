"""The Tiny World: a seeded generator that plays the internet, the labelers and the evaluations.

Public interface (used by pretrain, later stages, notebooks and the dashboard):

    build_world(cfg: LabConfig, force=False) -> World   build under <workspace>/data/ (or verify)
    load_world(cfg: LabConfig) -> World                  load; WorldDataError if missing/corrupt
    World.dir                                            the world directory
    World.stats() -> dict                                tokens, prompts per family/split, agreement
    World.train_documents() / heldout_documents()        pretraining corpus as list[str]
    World.tokenizer()                                    PreTrainedTokenizerFast (pad != eos)
    World.prompts(split, family=None) -> list[Prompt]    Prompt.text is the formatted prompt
    World.demonstrations(split) -> list[Demonstration]
    World.cloze_items(split) -> list[ClozeItem]          (context, answer) fact cloze
    World.gold.score(prompt, response) -> Judgement      Likert 1..7, quality 0..1, flags
    World.labelers / World.heldout_labelers              simulated labelers: .rank(...)
"""

from rlhf.world.build import World, build_world, load_world, world_dir
from rlhf.world.types import AXES, ClozeItem, Demonstration, Judgement, Prompt, format_prompt

__all__ = [
    "AXES",
    "ClozeItem",
    "Demonstration",
    "Judgement",
    "Prompt",
    "World",
    "build_world",
    "format_prompt",
    "load_world",
    "world_dir",
]
