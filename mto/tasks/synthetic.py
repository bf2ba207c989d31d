"""The embedded default task: a small ATOMIC-style commonsense world generated from a seed.

Heads are everyday events "PersonX <verb> <object>" (26 verbs, 56 objects in 8 domains, only
the verb/domain pairs that make sense). Every head gets the nine relations below with 1-3 tails.
The first tail of each (head, relation) follows a rule over the head's parts (the verb, the
object's domain or the object itself), so a model can predict tails for heads it never saw;
further tails are drawn per head from a small pool of alternatives, so some facts are
idiosyncratic and can only be known from the world itself (`world.txt`).
Accidental events (loses, finds, forgets) have `none` as xIntent and solitary ones `none` as
oReact, as in the ATOMIC-2020 release, so `drop_none` has something to do.

The world is written, once, into the cache folder as `train.tsv`, `dev.tsv`, `test.tsv` in the
ATOMIC-2020 release format (read back by `mto.tasks.atomic`) plus `world.txt`: one sentence per
fact of all three splits, standing in for a pre-training corpus that "knows" the world.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mto.cache import cached_dir, fingerprint
from mto.errors import ConfigError
from mto.tasks import SPLITS, TASKS, TaskData
from mto.tasks.atomic import load_atomic, selection

if TYPE_CHECKING:
    from mto.config import DataConfig

# Bump when a change below alters the generated files: it is part of the cache key.
GENERATOR_VERSION = 1

RELATIONS = ("xIntent", "xNeed", "xEffect", "xWant", "xReact", "xAttr", "oReact", "HinderedBy", "isAfter")
SPLIT_SHARES = {"train": 0.8, "dev": 0.1, "test": 0.1}
WORLD_FILE = "world.txt"
NONE = "none"

# How a fact reads as a sentence in world.txt: "<head>. <phrase with the tail>."
SENTENCE = {
    "xIntent": "PersonX wanted {tail}",
    "xNeed": "Before that, PersonX needed {tail}",
    "xEffect": "As a result, PersonX {tail}",
    "xWant": "Afterwards, PersonX wants {tail}",
    "xReact": "PersonX feels {tail}",
    "xAttr": "PersonX is {tail}",
    "oReact": "Others feel {tail}",
    "HinderedBy": "This is hindered if {tail}",
    "isAfter": "This happens after {tail}",
}

# Objects as they appear in heads; tails refer to them as "the <noun>" ({o} in the templates).
OBJECTS = {
    "food": ["a cake", "a pizza", "the soup", "a sandwich", "some cookies", "the pasta", "an apple pie"],
    "travel": [
        "a train ticket", "the suitcase", "a map", "the passport", "a backpack", "a tent", "a guidebook",
    ],
    "entertainment": [
        "a video game", "a guitar", "the board game", "a puzzle", "a card game", "the piano", "the drums",
    ],
    "sport": [
        "a football", "the bike", "a tennis racket", "the running shoes", "a basketball", "a skateboard",
        "the gym bag",
    ],
    "home": [
        "the sofa", "a lamp", "the kitchen table", "the curtains", "a plant", "the vacuum cleaner", "a rug",
    ],
    "study": [
        "a textbook", "the notebook", "a dictionary", "a calculator", "the pencil case", "a school bag",
        "a history book",
    ],
    "work": [
        "a laptop", "the printer", "a briefcase", "the stapler", "a desk chair", "an office phone",
        "a planner",
    ],
    "health": [
        "the medicine", "a first aid kit", "some vitamins", "a thermometer", "a bandage", "a yoga mat",
        "a water bottle",
    ],
}  # fmt: skip

# Per domain: xIntent, xReact and the default xWant (rules), and pools of per-head extras.
DOMAINS = {
    "food": dict(
        intent="to eat something", react="satisfied", want="to eat {o}",
        need_pool=["to be hungry", "to go to the kitchen", "to wash their hands"],
        want_pool=["to drink something", "to have dessert", "to wash the dishes"],
        react_pool=["full", "happy", "content"],
        hinder_pool=["PersonX is not hungry", "PersonX is on a diet", "the shop is closed"],
        after_pool=["PersonX feels hungry", "PersonX comes home", "PersonX skips lunch"],
        oreact_pool=["hungry", "pleased"],
    ),
    "travel": dict(
        intent="to go on a trip", react="excited", want="to travel with {o}",
        need_pool=["to plan a trip", "to save money", "to check the weather"],
        want_pool=["to see the world", "to book a hotel", "to catch the train"],
        react_pool=["adventurous", "happy", "nervous"],
        hinder_pool=["the train is cancelled", "PersonX is too busy", "the weather is bad"],
        after_pool=["PersonX plans a trip", "PersonX gets a holiday", "PersonX books a hotel"],
        oreact_pool=["jealous", "excited"],
    ),
    "entertainment": dict(
        intent="to have fun", react="entertained", want="to try {o}",
        need_pool=["to have free time", "to invite friends", "to turn off the phone"],
        want_pool=["to play again", "to invite friends over", "to relax"],
        react_pool=["happy", "relaxed", "amused"],
        hinder_pool=["PersonX has no free time", "PersonX is too tired", "the friends are busy"],
        after_pool=["PersonX finishes work", "PersonX gets bored", "PersonX has a day off"],
        oreact_pool=["amused", "happy"],
    ),
    "sport": dict(
        intent="to stay fit", react="energetic", want="to use {o} outside",
        need_pool=["to warm up", "to find a partner", "to change clothes"],
        want_pool=["to win a game", "to take a shower", "to drink water"],
        react_pool=["strong", "tired", "proud"],
        hinder_pool=["PersonX has a sore leg", "it is raining", "the park is closed"],
        after_pool=["PersonX joins a team", "PersonX wakes up early", "PersonX puts on sneakers"],
        oreact_pool=["competitive", "impressed"],
    ),
    "home": dict(
        intent="to make the home nice", react="comfortable", want="to show guests {o}",
        need_pool=["to measure the room", "to have some space", "to ask for help"],
        want_pool=["to invite guests", "to relax at home", "to tidy up"],
        react_pool=["cozy", "relaxed", "proud"],
        hinder_pool=["the room is too small", "PersonX has no time", "the store is out of stock"],
        after_pool=["PersonX moves house", "PersonX cleans the house", "PersonX gets home"],
        oreact_pool=["welcome", "comfortable"],
    ),
    "study": dict(
        intent="to learn something", react="focused", want="to study with {o}",
        need_pool=["to go to school", "to have a class", "to find a quiet place"],
        want_pool=["to pass the exam", "to do homework", "to take notes"],
        react_pool=["smart", "curious", "prepared"],
        hinder_pool=["PersonX cannot concentrate", "the library is closed", "PersonX is too sleepy"],
        after_pool=["PersonX starts school", "PersonX has an exam", "PersonX goes to class"],
        oreact_pool=["helpful", "interested"],
    ),
    "work": dict(
        intent="to get work done", react="productive", want="to bring {o} to work",
        need_pool=["to go to the office", "to have a job", "to ask the boss"],
        want_pool=["to finish the project", "to get paid", "to have a meeting"],
        react_pool=["busy", "professional", "efficient"],
        hinder_pool=["the boss says no", "PersonX is too busy", "the office is closed"],
        after_pool=["PersonX gets a new job", "PersonX arrives at work", "PersonX has a deadline"],
        oreact_pool=["thankful", "busy"],
    ),
    "health": dict(
        intent="to stay healthy", react="healthy", want="to keep {o} handy",
        need_pool=["to see a doctor", "to feel unwell", "to go to the pharmacy"],
        want_pool=["to get some rest", "to feel better", "to drink water"],
        react_pool=["better", "relieved", "safe"],
        hinder_pool=["PersonX is allergic", "the pharmacy is closed", "PersonX feels too sick"],
        after_pool=["PersonX gets sick", "PersonX sees a doctor", "PersonX hurts a knee"],
        oreact_pool=["worried", "relieved"],
    ),
}  # fmt: skip

ALL = tuple(DOMAINS)
NOT_FOOD = tuple(d for d in ALL if d != "food")
BIG_FURNITURE = ("the sofa", "the kitchen table", "the curtains", "a rug")


def _verb(
    domains: Iterable[str],
    intent: list[str] | None,
    need: str,
    effect: list[str],
    attr: list[str],
    hinder: str,
    after: str,
    react: list[str] | None = None,
    want: str | None = None,
    oreact: str | None = None,
    own_intent: bool = False,
    exclude: Iterable[str] = (),
) -> dict:
    """One verb's rules.

    `effect`, `attr`, `react`: [rule tail, *pool of extras]. `intent`: the pool of xIntent extras
    (the rule is the domain's purpose), or with `own_intent` [rule, *pool] for verbs whose purpose
    has nothing to do with the object's domain (selling, giving); None for accidental events
    (xIntent none). `react=None`/`want=None`: the domain's rule and pool. `oreact=None`: nobody
    else is involved (oReact none). `exclude`: objects of the domains that do not fit the verb.
    """
    return dict(
        domains=tuple(domains),
        intent=intent,
        need=need,
        effect=effect,
        attr=attr,
        hinder=hinder,
        after=after,
        react=react,
        want=want,
        oreact=oreact,
        own_intent=own_intent,
        exclude=frozenset(exclude),
    )


VERBS = {
    "buys": _verb(
        ALL, ["to own {o}", "to treat themselves"], "to have money",
        ["spends money", "gets a receipt", "carries a bag"], ["wealthy", "generous", "impulsive"],
        "PersonX has no money", "PersonX goes to the store",
    ),
    "orders": _verb(
        ALL, ["to get {o} delivered", "to save time"], "to go online",
        ["waits for the delivery", "pays online", "gets an email"], ["organized", "lazy", "modern"],
        "the website is down", "PersonX looks online",
    ),
    "borrows": _verb(
        NOT_FOOD, ["to use {o} for a while", "to save money"], "to ask nicely",
        ["owes a favor", "says thanks", "has to return it"], ["thrifty", "polite", "needy"],
        "nobody can lend {o}", "PersonX asks a friend", want="to give {o} back", exclude=BIG_FURNITURE,
    ),
    "finds": _verb(
        ALL, None, "to look around", ["smiles", "picks it up", "feels lucky"],
        ["lucky", "observant", "patient"], "{o} is hidden well", "PersonX searches the house",
        react=["happy", "lucky", "surprised", "relieved"],
    ),
    "loses": _verb(
        NOT_FOOD, None, "to have {o}", ["looks everywhere", "cries", "feels stressed"],
        ["careless", "forgetful", "clumsy"], "PersonX is careful", "PersonX takes {o} outside",
        react=["sad", "upset", "worried", "frustrated"], want="to find {o}",
        exclude=(*BIG_FURNITURE, "the piano"),
    ),
    "forgets": _verb(
        ALL, None, "to be in a hurry", ["has to go back", "feels silly", "is late"],
        ["forgetful", "distracted", "busy"], "PersonX writes a list", "PersonX leaves the house",
        react=["annoyed", "embarrassed", "frustrated"], want="to go back for {o}",
    ),
    "sells": _verb(
        ALL, ["to make money", "to get rid of {o}", "to pay the bills"], "to find a buyer",
        ["gets money", "has more space", "counts the cash"], ["practical", "greedy", "smart"],
        "nobody wants {o}", "PersonX puts up an ad", react=["pleased", "rich", "relieved", "sad"],
        want="to spend the money", own_intent=True,
    ),
    "gives PersonY": _verb(
        ALL, ["to be kind", "to make PersonY happy", "to help PersonY"], "to have {o}",
        ["gets a hug", "feels good", "gets thanked"], ["generous", "kind", "caring"],
        "PersonX needs {o} too", "PersonX wraps {o}", react=["happy", "proud", "good"],
        want="to see PersonY smile", oreact="grateful", own_intent=True,
    ),
    "shows PersonY": _verb(
        ALL, ["to impress PersonY", "to share something", "to show off"], "to bring {o}",
        ["gets attention", "talks a lot", "gets a compliment"], ["proud", "friendly", "open"],
        "PersonY is not interested", "PersonX meets PersonY", react=["proud", "excited", "pleased"],
        want="to hear what PersonY thinks", oreact="impressed", own_intent=True,
    ),
    "lends PersonY": _verb(
        NOT_FOOD, ["to help PersonY", "to be a good friend"], "to trust PersonY",
        ["has to wait", "gets thanked", "feels helpful"], ["helpful", "trusting", "kind"],
        "PersonX needs {o} today", "PersonY asks for {o}", react=["helpful", "nice", "worried"],
        want="to get {o} back", oreact="thankful", own_intent=True, exclude=BIG_FURNITURE,
    ),
    "cleans": _verb(
        ["travel", "sport", "home", "work", "health"], ["to keep {o} tidy", "to get rid of dirt"],
        "to get a cloth", ["gets dirty hands", "gets tired", "sweats"], ["neat", "tidy", "responsible"],
        "PersonX has no soap", "PersonX notices the dirt", react=["clean", "tired", "proud", "satisfied"],
        want="to rest", own_intent=True,
        exclude=["a train ticket", "a map", "the passport", "a guidebook", "the medicine",
                 "some vitamins", "a bandage", "a first aid kit"],
    ),
    "repairs": _verb(
        ["entertainment", "sport", "home", "work"],
        ["to fix {o}", "to save money", "to make {o} work again"], "to get some tools",
        ["gets dirty hands", "fixes it", "learns something"], ["handy", "skilled", "patient"],
        "PersonX has no tools", "{o} breaks", react=["proud", "accomplished", "useful"],
        want="to test {o}", own_intent=True,
        exclude=["a puzzle", "a card game", "the board game", "a plant", "a football", "a basketball"],
    ),
    "packs": _verb(
        ["food", "travel", "sport", "study", "health"], ["to be ready", "to not forget {o}"],
        "to get a bag", ["is ready to go", "closes the bag", "checks the list"],
        ["organized", "prepared", "careful"], "the bag is full", "PersonX makes a list",
        react=["ready", "calm", "prepared"], want="to leave the house",
        exclude=["the soup", "the pasta", "a backpack", "the gym bag", "a school bag"],
    ),
    "uses": _verb(
        ["travel", "sport", "study", "work", "health", "home"], ["to make use of {o}", "to try {o}"],
        "to have {o}", ["gets it done", "saves time", "learns how it works"],
        ["practical", "capable", "resourceful"], "{o} is broken", "PersonX gets {o}",
    ),
    "eats": _verb(
        ["food"], ["to satisfy hunger", "to enjoy a meal"], "to get a plate",
        ["feels full", "gains weight", "gets sleepy"], ["hungry", "greedy", "content"],
        "PersonX has a stomach ache", "PersonX feels hungry", react=["full", "satisfied", "happy"],
        want="to drink something",
    ),
    "makes": _verb(
        ["food"], ["to feed the family", "to practice cooking"], "to buy ingredients",
        ["has a messy kitchen", "feels proud", "smells the food"], ["creative", "skilled", "talented"],
        "PersonX has no ingredients", "PersonX reads a recipe", react=["proud", "hungry", "pleased"],
        want="to taste {o}",
    ),
    "shares": _verb(
        ["food", "entertainment"], ["to be nice", "to make friends"], "to have {o}",
        ["makes a friend", "gets thanked", "has less"], ["generous", "friendly", "kind"],
        "PersonX wants {o} alone", "PersonX gets {o}", react=["happy", "kind", "warm"],
        want="to spend time with friends", oreact="happy",
    ),
    "serves": _verb(
        ["food"], ["to be a good host", "to feed the guests"], "to cook {o}",
        ["gets compliments", "cleans up", "sits down"], ["hospitable", "polite", "helpful"],
        "{o} is burnt", "the guests arrive", react=["proud", "pleased", "tired"],
        want="to eat together", oreact="thankful", own_intent=True,
    ),
    "plays": _verb(
        ["entertainment"], ["to relax", "to pass the time", "to practice"], "to learn the rules",
        ["loses track of time", "gets better", "laughs"], ["playful", "fun", "competitive"],
        "PersonX has to work", "PersonX finishes homework", want="to play again", exclude=["a puzzle"],
    ),
    "enjoys": _verb(
        ["food", "entertainment"], ["to relax", "to treat themselves"], "to have time",
        ["smiles", "relaxes", "laughs"], ["cheerful", "easygoing", "happy"],
        "PersonX is in a bad mood", "PersonX gets {o}", react=["happy", "relaxed", "glad"],
    ),
    "checks": _verb(
        ["travel", "health"], ["to be sure", "to avoid problems"], "to find {o}",
        ["feels sure", "finds a problem", "nods"], ["careful", "thorough", "cautious"],
        "PersonX cannot find {o}", "PersonX gets worried", react=["reassured", "calm", "safe"],
        own_intent=True,
    ),
    "moves": _verb(
        ["home"], ["to change the room", "to make space"], "to ask for help",
        ["gets a sore back", "sweats", "gets tired"], ["strong", "helpful", "energetic"],
        "{o} is too heavy", "PersonX buys {o}", react=["tired", "satisfied", "proud"], want="to rest",
        own_intent=True,
    ),
    "paints": _verb(
        ["home"], ["to give {o} a new look", "to be creative"], "to buy paint",
        ["gets paint on their hands", "smells paint", "gets tired"], ["artistic", "creative", "patient"],
        "PersonX runs out of paint", "PersonX chooses a color", react=["proud", "creative", "happy"],
        want="to let {o} dry", own_intent=True, exclude=["a plant", "the vacuum cleaner"],
    ),
    "reads": _verb(
        ["study", "travel"], ["to find information", "to prepare for a test"], "to open {o}",
        ["learns something", "gets sleepy", "takes notes"], ["studious", "curious", "smart"],
        "PersonX is too tired to read", "PersonX opens {o}", react=["informed", "curious", "bored"],
        exclude=["a calculator", "the pencil case", "a school bag", "a train ticket", "the suitcase",
                 "a backpack", "a tent"],
    ),
    "sets up": _verb(
        ["work", "home"], ["to start working", "to get ready"], "to read the manual",
        ["is ready to start", "plugs it in", "gets confused"], ["capable", "technical", "organized"],
        "a part is missing", "PersonX unpacks {o}", react=["accomplished", "proud", "relieved"],
        want="to try {o}", exclude=["the curtains", "a plant", "a rug", "the stapler", "a planner"],
    ),
    "takes": _verb(
        ["health"], ["to feel better", "to get well"], "to have {o}",
        ["feels better", "gets sleepy", "rests"], ["sick", "responsible", "careful"],
        "PersonX forgets {o}", "PersonX gets sick", react=["relieved", "better", "hopeful"],
        want="to rest", exclude=["a yoga mat", "a water bottle", "a thermometer"],
    ),
}  # fmt: skip


def the(obj: str) -> str:
    """'a cake' -> 'the cake', 'some cookies' -> 'the cookies' (how tails refer to the object)."""
    first, _, rest = obj.partition(" ")
    return f"the {rest}" if first in ("a", "an", "some", "the") else obj


def combinations() -> list[tuple[str, str, str]]:
    """Every sensible (verb, object, domain) of the world, in a fixed order."""
    return [
        (verb, obj, domain)
        for verb, rules in VERBS.items()
        for domain in rules["domains"]
        for obj in OBJECTS[domain]
        if obj not in rules["exclude"]
    ]


def head_tails(verb: str, obj: str, domain: str, seed: int) -> dict[str, list[str]]:
    """The tails of one head for every relation: the rule tail first, then 0-2 per-head extras.

    The extras come from a generator seeded by (seed, head), so a head's facts do not depend on
    which other heads the world holds.
    """
    v, d = VERBS[verb], DOMAINS[domain]
    rng = random.Random(f"{seed}|PersonX {verb} {obj}")

    def pick(rule: str, pool: Iterable[str]) -> list[str]:
        extras = [p for p in dict.fromkeys(pool) if p != rule]
        return [rule, *rng.sample(extras, min(rng.choice((0, 1, 1, 2)), len(extras)))]

    if v["intent"] is None:  # an accident has no intent
        intent = [NONE]
    elif v["own_intent"]:
        intent = pick(v["intent"][0], v["intent"][1:])
    else:
        intent = pick(d["intent"], v["intent"])
    react = v["react"] or [d["react"], *d["react_pool"]]
    facts = {
        "xIntent": intent,
        "xNeed": pick(v["need"], d["need_pool"]),
        "xEffect": pick(v["effect"][0], v["effect"][1:]),
        "xWant": pick(v["want"] or d["want"], d["want_pool"]),
        "xReact": pick(react[0], react[1:]),
        "xAttr": pick(v["attr"][0], v["attr"][1:]),
        "oReact": pick(v["oreact"], d["oreact_pool"]) if v["oreact"] else [NONE],
        "HinderedBy": pick(v["hinder"], d["hinder_pool"]),
        "isAfter": pick(v["after"], d["after_pool"]),
    }
    o = the(obj)
    return {relation: [t.format(o=o) for t in facts[relation]] for relation in RELATIONS}


def generate_world(n_heads: int = 600, seed: int = 0) -> dict[str, list[tuple[str, str, str]]]:
    """Split name -> (head, relation, tail) triples; heads split 80/10/10 at random, disjointly."""
    pool = combinations()
    _check_n_heads(n_heads, len(pool))
    rng = random.Random(seed)
    chosen = rng.sample(pool, n_heads)  # random order, so slicing below is a random split
    n_dev = round(n_heads * SPLIT_SHARES["dev"])
    n_test = round(n_heads * SPLIT_SHARES["test"])
    parts = {
        "train": chosen[: n_heads - n_dev - n_test],
        "dev": chosen[n_heads - n_dev - n_test : n_heads - n_test],
        "test": chosen[n_heads - n_test :],
    }
    world: dict[str, list[tuple[str, str, str]]] = {}
    for split, heads in parts.items():
        world[split] = [
            (f"PersonX {verb} {obj}", relation, tail)
            for verb, obj, domain in heads
            for relation, tails in head_tails(verb, obj, domain, seed).items()
            for tail in tails
        ]
    return world


def _check_n_heads(n_heads: object, available: int) -> None:
    """ConfigError unless 10 <= n_heads <= the number of sensible heads (each split needs one)."""
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or not 10 <= n_heads <= available:
        raise ConfigError(f"data.n_heads: expected an integer from 10 to {available}, got {n_heads!r}")


def world_sentences(triples: Iterable[tuple[str, str, str]]) -> list[str]:
    """One sentence per fact ('PersonX buys a cake. PersonX wanted to eat something.'), `none` skipped.

    Relations without a phrase of ours read '<head>. <relation>: <tail>.'.
    """
    sentences = []
    for head, relation, tail in triples:
        if tail.strip().lower() == NONE:
            continue
        phrase = SENTENCE[relation].format(tail=tail) if relation in SENTENCE else f"{relation}: {tail}"
        sentences.append(f"{head}. {phrase}.")
    return sentences


def write_world(folder: Path, n_heads: int, seed: int) -> None:
    """Write train/dev/test.tsv (ATOMIC-2020 release format) and world.txt into `folder`."""
    world = generate_world(n_heads, seed)
    for split, triples in world.items():
        lines = "".join(f"{head}\t{relation}\t{tail}\n" for head, relation, tail in triples)
        (folder / f"{split}.tsv").write_text(lines, encoding="utf-8", newline="\n")
    # Sorted by head so that a line's position in the corpus says nothing about the head's split.
    every_fact = sorted((t for triples in world.values() for t in triples), key=lambda t: t[0])
    text = "".join(f"{s}\n" for s in world_sentences(every_fact))
    (folder / WORLD_FILE).write_text(text, encoding="utf-8", newline="\n")


def world_key(n_heads: int, seed: int) -> str:
    """Cache key: the generator's parameters and version."""
    return fingerprint({"n_heads": n_heads, "seed": seed, "version": GENERATOR_VERSION})


@TASKS.register("synthetic")
def synthetic_task(cfg: DataConfig, splits: Sequence[str] = SPLITS) -> TaskData:
    """`data.kind=synthetic`: the world of `data.n_heads` heads from `data.world_seed`, written in the
    ATOMIC-2020 format (cached) and read like it."""
    options = selection(cfg)
    folder = world_dir(n_heads=cfg.n_heads, seed=cfg.world_seed)
    return load_atomic(folder, **options, name=cfg.name or "synthetic", splits=splits)


def world_dir(n_heads: int = 600, seed: int = 0) -> Path:
    """The cache folder holding this world's files, generated on first use."""
    _check_n_heads(n_heads, len(combinations()))  # before touching the cache
    key = world_key(n_heads, seed)
    return cached_dir("synthetic", key, lambda folder: write_world(folder, n_heads, seed))
