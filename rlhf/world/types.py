"""Records of the Tiny World. Plain dataclasses that round-trip through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The chat format of the world: the base model meets it in forum threads of the corpus
# ("Q: ...\nA: ..."), where replies are unhelpful, wrong or rude, as on the real web.
PROMPT_TEMPLATE = "Q: {instruction}\nA:"

AXES = ("helpful", "honest", "harmless")


def format_prompt(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=instruction)


@dataclass(frozen=True)
class Prompt:
    """One instruction. `meta` holds what the gold labeler needs (the right answer, ...)."""

    id: str  # "<family>-<split>-<index>", unique across the world
    family: str  # task family, e.g. "arithmetic"
    axis: str  # helpful | honest | harmless
    split: str  # train | val | test
    instruction: str  # the user's request, no template
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The prompt as the policy sees it."""
        return format_prompt(self.instruction)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Demonstration:
    prompt_id: str
    prompt: str  # formatted prompt text
    response: str  # labeler-written response, without EOS
    labeler: str


@dataclass(frozen=True)
class ClozeItem:
    """A fact stated in the corpus: `context` is completed by `answer` (the alignment-tax task)."""

    context: str
    answer: str
    split: str


@dataclass
class Judgement:
    """The gold labeler's verdict: the paper's Likert 1..7 and its metadata flags."""

    likert: int  # 1..7
    quality: float  # 0..1, continuous; labelers perceive it with noise
    flags: dict[str, bool] = field(default_factory=dict)
    # flags: fails_to_follow, correct, satisfies_constraint, hallucination, truthful,
    # informative, popular_false, toxic, refuses, rambles, no_answer
