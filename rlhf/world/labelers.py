"""Simulated labelers: personas that rank K responses with their own noise and small quirks.

A labeler perceives utility = gold quality + persona quirk + N(0, noise^2) and ranks by it;
two responses closer than `tie_margin` are a tie (ties give no training pair, paper 3.5).

The perception error belongs to the *kind* of answer (its set of gold flags: correct, toxic,
rambles, refuses, ...), not to its wording: labelers disagree about how to weigh kinds against
each other (a wrong answer against an "I don't know", a rude reply against a ramble), while two
answers of the same kind look alike to every labeler apart from their visible style (a tidy
sentence) and the labeler's own quirk. With a per-text error instead, the many same-kind pairs
among SFT samples were coin flips: agreement fell to 61% on SFT samples and the best possible
reward model reached 62%, against 73% on mixed-quality responses (world v3).

One exception to "gold quality": on a plain request to insult someone (no respectful
instruction) the labelers judge by helpfulness, as the paper's did during training (section
3.4): a rude reply is what was asked for (`comply_quality`) and a refusal declines it
(`refuse_quality`); the gold labeler, like the paper's final evaluations, puts harmlessness
first. The defaults of `Labeler` judge as the gold labeler does; the world config sets them.

The noise is calibrated so two labelers agree on ~73% of pairs (paper: 72.6 +/- 1.5%), both on
mixed-quality responses (measured by the world build) and on SFT samples (`rlhf compare`); one
group of labelers is held out for reward-model evaluation (paper: 72.4% train, 69.6% held out).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import asdict, dataclass

from rlhf.errors import ConfigError
from rlhf.world.gold import GoldLabeler, words
from rlhf.world.types import Judgement, Prompt

# name -> (quirk, strength). Quirks are small next to the noise: preferences, not a new task.
PERSONAS = {
    "ana": ("concise", 0.006),
    "bo": ("thorough", 0.004),
    "cy": ("formal", 0.05),
    "dee": ("strict_harmless", 0.2),
    "eli": ("literal", 0.06),
    "fay": ("none", 0.0),
    "gus": ("concise", 0.004),
    "hal": ("formal", 0.03),
    "ivy": ("thorough", 0.003),
    "jo": ("literal", 0.04),
    "kit": ("none", 0.0),
}


@dataclass
class Labeler:
    id: str
    group: str  # "train" | "heldout"
    quirk: str
    strength: float
    noise: float
    tie_margin: float
    # Quality perceived in a rude reply to, and in a refusal of, a plain request to insult: at
    # training time the labelers put helpfulness first (paper 3.4); the gold labeler does not.
    comply_quality: float = 0.02
    refuse_quality: float = 0.94

    def to_dict(self) -> dict:
        return asdict(self)

    def quirk_bonus(self, response: str, j: Judgement) -> float:
        n = len(words(response))
        return (
            self.strength
            * {
                "concise": -n,
                "thorough": min(n, 15),
                "formal": float(response.strip()[:1].isupper() and response.strip()[-1:] in ".!?"),
                "strict_harmless": -float(j.flags.get("toxic", False)),
                "literal": float(j.flags.get("correct", False)),
                "none": 0.0,
            }[self.quirk]
        )

    def utilities(
        self, prompt: Prompt, responses: list[str], gold: GoldLabeler, rng: random.Random
    ) -> list[float]:
        """Perceived utility per response. The noise is a function of the answer's kind (its
        true gold flags) and one draw from `rng` per ranking, so identical responses always tie
        and same-kind responses differ only by gold quality and quirk."""
        salt = rng.random()
        out = []
        for r in responses:
            j = gold.score(prompt, r)
            kind = ",".join(sorted(k for k, v in j.flags.items() if v))
            noise = _rng(self.id, prompt.id, kind, repr(salt)).gauss(0.0, self.noise)
            out.append(self.perceived(prompt, r, j) + noise)
        return out

    def perceived(self, prompt: Prompt, response: str, j: Judgement) -> float:
        """The utility this labeler perceives in `response` (gold judgement `j`) before the
        noise: its mean over rankings, what a perfect reward model of this labeler learns."""
        quality = j.quality
        if is_plain_harmful(prompt) and j.flags.get("toxic"):
            quality = self.comply_quality
        elif is_plain_harmful(prompt) and j.flags.get("refuses"):
            quality = self.refuse_quality
        return quality + self.quirk_bonus(response, j)

    def rank(
        self,
        prompt: Prompt,
        responses: list[str],
        gold: GoldLabeler,
        rng: random.Random | None = None,
    ) -> list[int]:
        """Ranks for `responses`: 0 is best, equal ranks are ties (dense ranking).

        Without an rng the labeler's perception is a fixed function of (labeler, prompt, response
        set), so asking the same labeler twice gives the same ranking.
        """
        if rng is None:
            rng = _rng(self.id, prompt.id, *responses)
        u = self.utilities(prompt, responses, gold, rng)
        order = sorted(range(len(u)), key=lambda i: -u[i])
        ranks = [0] * len(u)
        rank, anchor = 0, u[order[0]] if order else 0.0
        for pos, i in enumerate(order):
            if pos > 0 and anchor - u[i] >= self.tie_margin:
                rank, anchor = rank + 1, u[i]
            ranks[i] = rank
        return ranks


def is_plain_harmful(prompt: Prompt) -> bool:
    """A request to insult someone without the respectful instruction in front."""
    return prompt.family == "insult" and not prompt.meta.get("respectful", False)


def _rng(*parts: str) -> random.Random:
    key = "\x1f".join(parts).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def check_counts(n_train: int, n_heldout: int) -> None:
    """A ConfigError when the world has too few personas for the labelers asked for."""
    if n_train + n_heldout > len(PERSONAS):
        raise ConfigError(
            f"world.n_labelers={n_train} + world.n_heldout_labelers={n_heldout}: the world has "
            f"{len(PERSONAS)} labeler personas, so at most {len(PERSONAS)} in all"
        )


def make_labelers(
    n_train: int,
    n_heldout: int,
    noise: float,
    tie_margin: float,
    rng: random.Random,
    comply_quality: float = 0.02,
    refuse_quality: float = 0.94,
) -> list[Labeler]:
    check_counts(n_train, n_heldout)
    names = list(PERSONAS)
    out = []
    for i, name in enumerate(names[: n_train + n_heldout]):
        quirk, strength = PERSONAS[name]
        group = "train" if i < n_train else "heldout"
        # Each persona's noise is within +/-10% of the calibrated value.
        out.append(
            Labeler(
                name,
                group,
                quirk,
                strength,
                round(noise * rng.uniform(0.9, 1.1), 4),
                tie_margin,
                comply_quality,
                refuse_quality,
            )
        )
    return out


def pairwise_agreement(ranks_a: list[list[int]], ranks_b: list[list[int]]) -> tuple[float, int]:
    """Share of response pairs that two labelers order the same way, over pairs where both
    state a strict preference (the paper's inter-annotator agreement). Returns (rate, pairs)."""
    agree = total = 0
    for ra, rb in zip(ranks_a, ranks_b, strict=True):
        for i, j in itertools.combinations(range(len(ra)), 2):
            da, db = ra[i] - ra[j], rb[i] - rb[j]
            if da == 0 or db == 0:
                continue
            total += 1
            agree += (da > 0) == (db > 0)
    return (agree / total if total else float("nan")), total
