"""The pretraining corpus: the Tiny World's "web".

Document kinds, each with the habit it teaches the base model (design.md, "The Tiny World"):
    profile     country facts, the first template stated most often   -> knows the facts (cloze)
    rumour      misconceptions, the popular false answer 4x the truth -> repeats misconceptions
    forum       "Q: ...\nA: ..." threads, replies mostly unhelpful, wrong or rude, several
                questions per thread                                  -> does not follow, rambles
    people      notes about people, half of them rude                 -> continues rudeness
    story, lists, math, words                                         -> the language of the tasks
Sizes: `corpus_words` in total; each fact and misconception is stated `fact_mentions` times.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rlhf.world.entities import FACT_ATTRS, MISCONCEPTION_PROPS, Entities
from rlhf.world.families import Family, Transform, Writing, rude_reply
from rlhf.world.lexicon import KIND_WORDS, LIST_CATEGORIES, NOUNS, NUMBER_WORDS, TOPICS

FILLER_MIX = {"forum": 0.45, "story": 0.17, "people": 0.1, "lists": 0.08, "math": 0.1, "words": 0.1}


def profile_docs(ents: Entities, mentions: int, rng: random.Random) -> list[str]:
    docs = []
    intros = [
        "{c} is a small country.",
        "{c} is a country far away.",
        "Facts about {c}.",
        "{c}",
        "A short guide to {c}.",
    ]
    for c in ents.countries:
        for _ in range(mentions):
            attrs = rng.sample(sorted(FACT_ATTRS), len(FACT_ATTRS))
            sents = [rng.choice(intros).format(c=c.name)]
            for a in attrs:
                temps = FACT_ATTRS[a]["statements"]
                # The cloze template gets half the mentions so the cloze context is familiar.
                t = temps[0] if rng.random() < 0.5 else rng.choice(temps[1:])
                sents.append(t.format(c=c.name, v=c.facts[a]))
            docs.append(" ".join(sents))
    return docs


def rumour_docs(ents: Entities, mentions: int, rng: random.Random) -> list[str]:
    popular = [
        "Everyone knows that {s}",
        "My friend told me that {s}",
        "{S}",
        "It is well known that {s}",
        "As we all know, {s}",
    ]
    truth = ["Scientists found that {s}", "In fact, {s}", "A careful study shows that {s}"]
    sents = []
    for m in ents.misconceptions:
        spec = MISCONCEPTION_PROPS[m.prop]
        for i in range(mentions):
            value, temps = (m.truth, truth) if i % 5 == 0 else (m.popular, popular)
            s = spec["statement"].format(p=m.plural, P=m.plural.capitalize(), s=m.creature, v=value)
            s = s[0].lower() + s[1:]
            sents.append(rng.choice(temps).format(s=s, S=s[0].upper() + s[1:]))
    rng.shuffle(sents)
    docs, i = [], 0
    while i < len(sents):
        n = rng.randint(3, 6)
        docs.append(" ".join(sents[i : i + n]))
        i += n
    return docs


def forum_doc(fams: list[Family], pool: dict[str, list], rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 3)):
        fam = rng.choice(fams)
        instruction, meta = rng.choice(pool[fam.name])
        lines.append(f"Q: {instruction}")
        if rng.random() < 0.1:
            continue  # a question nobody answered: the next line is another question
        kinds, weights = zip(*fam.forum_mix.items(), strict=True)
        for _ in range(rng.choice([1, 1, 2, 3])):
            lines.append("A: " + fam.respond(meta, rng.choices(kinds, weights)[0], rng))
    return "\n".join(lines)


def story_doc(rng: random.Random) -> str:
    t = rng.choice(TOPICS)
    body = Writing.sentences(t, rng.randint(3, 6), rng)
    return (
        rng.choice(["Once upon a time there was {t}. ", "A story about {t}. ", ""]).format(t=t)
        + body
    )


def people_doc(ents: Entities, rng: random.Random) -> str:
    n = rng.choice(ents.people)
    if rng.random() < 0.5:
        return " ".join(rude_reply(rng, n) for _ in range(rng.randint(1, 3)))
    k1, k2 = rng.sample(KIND_WORDS, 2)
    return rng.choice(
        [
            f"{n} is {k1} and {k2}.",
            f"I like {n}. {n} is very {k1}.",
            f"{n} helped me today. {n} is {k1}.",
        ]
    )


def lists_doc(rng: random.Random) -> str:
    c = rng.choice(sorted(LIST_CATEGORIES))
    items = rng.sample(LIST_CATEGORIES[c], rng.randint(2, 6))
    return rng.choice(
        ["{C}: {i}.", "My favourite {c}: {i}.", "Some {c} are {i}.", "Here are some {c}: {i}."]
    ).format(c=c, C=c.capitalize(), i=", ".join(items))


def math_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 8)):
        op = rng.choice(["plus", "minus", "times"])
        hi = 10 if op == "times" else 20
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        if op == "minus" and b > a:
            a, b = b, a
        ans = {"plus": a + b, "minus": a - b, "times": a * b}[op]
        lines.append(f"{a} {op} {b} is {ans}.")
    return " ".join(lines)


def words_doc(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(2, 5)):
        w = rng.choice(NOUNS)
        t = rng.choice(["upper", "reverse", "repeat"])
        n = rng.randint(2, 4)
        v = Transform.apply(t, w, n)
        out.append(
            {
                "upper": f"The word {w} in upper case is {v}.",
                "reverse": f"The word {w} backwards is {v}.",
                "repeat": f"The word {w} {NUMBER_WORDS[n]} times is {v}.",
            }[t]
        )
    return " ".join(out)


def make_corpus(
    ents: Entities,
    fams: dict[str, Family],
    forum_pool: dict[str, list],
    corpus_words: int,
    mentions: int,
    rng: random.Random,
) -> list[str]:
    """All documents, shuffled. `forum_pool` maps family -> [(instruction, meta)] the web may ask
    (the builder leaves out val/test prompt texts)."""
    docs = profile_docs(ents, mentions, rng) + rumour_docs(ents, mentions, rng)
    used = sum(len(d.split()) for d in docs)
    fam_list = [fams[k] for k in sorted(fams)]
    makers: dict[str, Callable[[], str]] = {
        "forum": lambda: forum_doc(fam_list, forum_pool, rng),
        "story": lambda: story_doc(rng),
        "people": lambda: people_doc(ents, rng),
        "lists": lambda: lists_doc(rng),
        "math": lambda: math_doc(rng),
        "words": lambda: words_doc(rng),
    }
    kinds, weights = zip(*FILLER_MIX.items(), strict=True)
    while used < corpus_words:
        d = makers[rng.choices(kinds, weights)[0]]()
        docs.append(d)
        used += len(d.split())
    rng.shuffle(docs)
    return docs
