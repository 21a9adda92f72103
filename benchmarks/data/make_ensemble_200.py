"""Writes `ensemble_200.jsonl`: 200 questions with known short answers for `benchmarks/ensemble_gain.py`, made
deterministically (the same file every time; `tests/test_ensemble_questions.py` checks that the shipped file is this
script's output and that every answer is right).

    python benchmarks/data/make_ensemble_200.py

Half are computed, so their answers are checked by construction: 80 sums, differences and products of small numbers
(`number` match), the number after n, the day and month after another, the letter after another. The other half are
well-known facts a small model may know (capitals, opposites, colours, animals), each written once below, scored by
their short answer (`answer` match: "The capital of France is Paris." matches `Paris`).
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "ensemble_200.jsonl"
NUMBER_ONLY = "Answer with the number only."
ONE_WORD = "Answer in one word."

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Japan": "Tokyo", "Germany": "Berlin", "Spain": "Madrid",
    "England": "London", "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest", "Kenya": "Nairobi",
    "Peru": "Lima", "Cuba": "Havana", "Thailand": "Bangkok", "South Korea": "Seoul", "Canada": "Ottawa",
    "Australia": "Canberra", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "India": "New Delhi",
    "the Netherlands": "Amsterdam",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "day": "night", "fast": "slow", "happy": "sad", "open": "closed",
    "wet": "dry", "love": "hate", "full": "empty", "tall": "short", "rich": "poor", "early": "late",
    "left": "right", "win": "lose", "yes": "no", "push": "pull", "top": "bottom", "black": "white", "in": "out",
}
FACTS = [
    ("What colour is the sky on a clear day?", "blue"), ("What colour is grass?", "green"),
    ("What colour is snow?", "white"), ("What colour is a ripe banana?", "yellow"),
    ("What colour is a ripe tomato?", "red"), ("What is the largest planet in the solar system?", "Jupiter"),
    ("Which planet is known as the red planet?", "Mars"), ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"), ("Which animal is known as the king of the jungle?", "lion"),
    ("What star is at the centre of our solar system?", "Sun"), ("Which ocean is the largest?", "Pacific"),
    ("What animal says moo?", "cow"), ("What animal barks?", "dog"), ("What animal says meow?", "cat"),
    ("What is the largest animal on Earth?", "blue whale"), ("What white drink do cows give?", "milk"),
    ("Which planet do we live on?", "Earth"), ("What is the natural satellite of the Earth called?", "Moon"),
    ("What do we call a baby dog?", "puppy"),
]


def computed(rng: random.Random) -> list[dict]:
    """The questions whose answers are computed here."""
    out: list[dict] = []
    seen: set[tuple] = set()
    while len(out) < 80:
        kind = ("plus", "minus", "times")[len(out) % 3]
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        if kind == "minus":
            a, b = max(a, b), min(a, b)
        if kind == "times":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
        if (kind, a, b) in seen:
            continue
        seen.add((kind, a, b))
        value = a + b if kind == "plus" else a - b if kind == "minus" else a * b
        out.append({"id": f"math{len(out) + 1:02d}", "prompt": f"What is {a} {kind} {b}? {NUMBER_ONLY}",
                    "expected": str(value)})
    for k, n in enumerate(rng.sample(range(3, 99), 20), 1):
        out.append({"id": f"next{k:02d}", "prompt": f"What number comes after {n}? {NUMBER_ONLY}",
                    "expected": str(n + 1)})
    for k, day in enumerate(DAYS, 1):
        out.append({"id": f"day{k}", "prompt": f"What day of the week comes after {day}? {ONE_WORD}",
                    "expected": DAYS[k % 7]})
    for k, month in enumerate(MONTHS[:-1], 1):
        out.append({"id": f"month{k:02d}", "prompt": f"What month comes after {month}? {ONE_WORD}",
                    "expected": MONTHS[k]})
    # Not H: its answer, "I", would be a filler word when the reply says "The letter I".
    for k, letter in enumerate(rng.sample(string.ascii_uppercase[:-1].replace("H", ""), 12), 1):
        out.append({"id": f"letter{k:02d}",
                    "prompt": f"Which letter of the alphabet comes after {letter}? Answer with the letter only.",
                    "expected": chr(ord(letter) + 1)})
    return out


def known() -> list[dict]:
    """The well-known facts."""
    out = [{"id": f"capital{k:02d}", "prompt": f"What is the capital of {country}? {ONE_WORD}", "expected": city}
           for k, (country, city) in enumerate(CAPITALS.items(), 1)]
    out += [{"id": f"opposite{k:02d}", "prompt": f"What is the opposite of {word}? {ONE_WORD}", "expected": other}
            for k, (word, other) in enumerate(OPPOSITES.items(), 1)]
    out += [{"id": f"fact{k:02d}", "prompt": f"{question} {ONE_WORD}", "expected": answer}
            for k, (question, answer) in enumerate(FACTS, 1)]
    return out


def questions() -> list[dict]:
    """All 200, in a fixed shuffled order (so `--limit N` takes a mix of every kind)."""
    rng = random.Random(29)
    every = computed(rng) + known()
    rng.shuffle(every)
    return every


def text() -> str:
    return "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions())


if __name__ == "__main__":
    OUT.write_text(text(), encoding="utf-8")
    print(f"{OUT}: {len(questions())} questions")
