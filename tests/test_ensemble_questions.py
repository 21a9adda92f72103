"""The 200 shipped questions of `benchmarks/ensemble_gain.py`: the file is its generator's output, each answer is
right, and a reply that says it the way a model does scores right (issue 29, point 4)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from parallama.batch import read_records
from parallama.scoring import is_correct

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"


def generator():
    spec = importlib.util.spec_from_file_location("make_ensemble_200", DATA / "make_ensemble_200.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_file_is_the_generators_output_and_every_answer_is_right():
    assert (DATA / "ensemble_200.jsonl").read_text(encoding="utf-8") == generator().text()
    records = read_records(str(DATA / "ensemble_200.jsonl"))
    assert len(records) == 200 and len({r.id for r in records}) == 200
    ops = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    kinds = {}
    for r in records:
        kinds[r.match] = kinds.get(r.match, 0) + 1
        if arith := re.match(r"What is (\d+) (plus|minus|times) (\d+)\?", r.prompt):
            assert int(r.expected) == ops[arith.group(2)](int(arith.group(1)), int(arith.group(3)))
        if after := re.match(r"What number comes after (\d+)\?", r.prompt):
            assert int(r.expected) == int(after.group(1)) + 1
        if letter := re.match(r"Which letter of the alphabet comes after (\w)\?", r.prompt):
            assert ord(r.expected) == ord(letter.group(1)) + 1
        assert is_correct(r.expected, r.expected, r.match, r.prompt)
    assert kinds == {"number": 100, "answer": 100}


def test_replies_as_models_write_them_score_right_and_wrong_ones_do_not():
    records = {r.id: r for r in read_records(str(DATA / "ensemble_200.jsonl"))}
    germany = records["capital04"]
    for reply in ("Berlin", "The capital of Germany is Berlin.", "It's Berlin!", "**Berlin**"):
        assert is_correct(reply, germany.expected, germany.match, germany.prompt), reply
    for reply in ("Bern", "Munich is the capital of Germany.", "...", ""):
        assert not is_correct(reply, germany.expected, germany.match, germany.prompt), reply
    hot = records["opposite01"]
    assert is_correct("The opposite of hot is cold.", hot.expected, hot.match, hot.prompt)
    assert not is_correct("The opposite of hot is warm.", hot.expected, hot.match, hot.prompt)
    line = json.loads((DATA / "ensemble_200.jsonl").read_text().splitlines()[0])
    assert set(line) <= {"id", "prompt", "expected", "match"}
