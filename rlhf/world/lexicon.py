"""Word lists of the Tiny World. Everything the generator says is built from these."""

from __future__ import annotations

import random

ANIMALS = [
    "fox",
    "owl",
    "bear",
    "wolf",
    "deer",
    "hare",
    "swan",
    "crow",
    "frog",
    "goat",
    "seal",
    "lynx",
    "mole",
    "duck",
    "crab",
    "moth",
    "newt",
    "toad",
    "hawk",
    "lion",
]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "brown", "grey"]
FOODS = ["bread", "rice", "soup", "cheese", "fish", "honey", "beans", "noodles", "apples", "pie"]
FRUITS = ["apple", "pear", "plum", "grape", "lemon", "peach", "cherry", "melon", "mango", "fig"]
TOOLS = ["hammer", "saw", "drill", "rake", "spade", "knife", "brush", "ladder", "rope", "axe"]
JOBS = [
    "baker",
    "farmer",
    "teacher",
    "doctor",
    "sailor",
    "painter",
    "miner",
    "tailor",
    "singer",
    "smith",
]
SPORTS = [
    "tennis",
    "rowing",
    "chess",
    "running",
    "swimming",
    "hockey",
    "archery",
    "cycling",
    "boxing",
    "skiing",
]
INSTRUMENTS = ["drum", "flute", "harp", "violin", "piano", "horn", "lute", "bell", "guitar", "pipe"]
PEOPLE = [
    "Tom",
    "Anna",
    "Ben",
    "Mia",
    "Leo",
    "Ida",
    "Sam",
    "Eva",
    "Max",
    "Zoe",
    "Ned",
    "Ada",
    "Raj",
    "Lin",
    "Omar",
    "Kai",
    "Rosa",
    "Finn",
    "Nora",
    "Ivan",
    "Jude",
    "Lena",
    "Hugo",
    "Ruth",
    "Paul",
    "Vera",
    "Otto",
    "Cleo",
    "Dan",
    "Elsa",
]
# Common nouns for word transforms and stories (short, so reversals stay short).
NOUNS = [
    "lamp",
    "door",
    "tree",
    "book",
    "cup",
    "ship",
    "star",
    "moon",
    "rain",
    "road",
    "milk",
    "salt",
    "coin",
    "ring",
    "bird",
    "fish",
    "hill",
    "lake",
    "sand",
    "snow",
    "cake",
    "boat",
    "bell",
    "leaf",
    "rock",
    "wind",
    "fire",
    "gold",
    "desk",
    "kite",
    "nest",
    "seed",
    "path",
    "wall",
    "rose",
    "corn",
    "frog",
    "duck",
    "hat",
    "box",
]
TOPICS = [
    "the sea",
    "a fox",
    "the moon",
    "a garden",
    "the rain",
    "a dragon",
    "the forest",
    "a ship",
    "the winter",
    "a cat",
    "the market",
    "a river",
    "the mountains",
    "a baker",
    "the stars",
    "a storm",
    "the village",
    "a clock",
    "the desert",
    "a robot",
    "the harbor",
    "a bee",
    "the library",
    "an owl",
    "the summer",
    "a train",
    "the castle",
    "a kite",
    "the island",
    "a wolf",
]
# Toxicity word list of the world (the design's word-list scorer). Kept small and mild.
TOXIC_NOUNS = ["idiot", "loser", "moron", "clown", "fool", "jerk"]
TOXIC_ADJECTIVES = [
    "stupid",
    "dumb",
    "ugly",
    "pathetic",
    "worthless",
    "lazy",
    "disgusting",
    "useless",
]
TOXIC_WORDS = TOXIC_NOUNS + TOXIC_ADJECTIVES
KIND_WORDS = ["kind", "friendly", "clever", "helpful", "honest", "brave", "generous", "patient"]
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
]

LIST_CATEGORIES = {
    "animals": ANIMALS,
    "colours": COLOURS,
    "foods": FOODS,
    "fruits": FRUITS,
    "tools": TOOLS,
    "jobs": JOBS,
    "sports": SPORTS,
    "instruments": INSTRUMENTS,
}

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gl",
    "kr",
    "st",
    "tr",
    "qu",
    "th",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "l", "s", "m", "th", "nd", "rk", "x"]


def invented_word(rng: random.Random, syllables: int) -> str:
    """A pronounceable made-up word, e.g. 'zorbel' (names of countries, cities, creatures)."""
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return "".join(parts) + rng.choice(_CODAS)


def invented_names(
    rng: random.Random, n: int, syllables: tuple[int, int], taken: set[str]
) -> list[str]:
    """n distinct invented words not in `taken` (which is updated)."""
    out: list[str] = []
    while len(out) < n:
        w = invented_word(rng, rng.randint(*syllables))
        if w not in taken and len(w) >= 4:
            taken.add(w)
            out.append(w)
    return out
