"""Scoring a batch against expected answers: numbers as numbers, exact after normalising, contains, regex; the
accuracy table per worker, of the final answer, and the ensemble gain."""

from __future__ import annotations

import json
import re

import pytest

from conftest import invoke, worker, write_config
from fakes import FakeServer

from parallama.scoring import is_correct, last_number, normalise


@pytest.mark.parametrize("answer", ["42", "42.0", "The answer is 42.", "42.000", "So: $42", "It's 42!",
                                    "6 × 7 = 42", "forty-two, i.e. 42", "-1 + 43 = 42.0\n"])
def test_a_number_written_differently_is_the_same_number(answer):
    assert is_correct(answer, "42", "number")
    assert is_correct(answer, "42.0", "number")


@pytest.mark.parametrize("answer", ["41", "42 is wrong, it is 43", "420", "4.2", "forty-two", "", "x42"])
def test_only_the_last_number_counts(answer):
    assert not is_correct(answer, "42", "number")


def test_numbers_with_separators_signs_and_ranges():
    assert last_number("about 1,000,000 people") == 1_000_000
    assert last_number("pages 10-12") == 12  # a dash between numbers is not a minus sign
    assert last_number("x = -3.5") == -3.5
    assert last_number("no digits here") is None
    assert is_correct("It costs $1,000.", "1000", "number")
    assert is_correct("50%", "50%", "number")


def test_exact_ignores_case_spaces_and_punctuation_but_not_words():
    assert normalise("  The  Answer:\n'Paris'. ") == "the answer paris"
    assert is_correct("paris.", "Paris", "exact")
    assert is_correct("«PARIS»", "paris", "exact")
    assert not is_correct("It is Paris", "Paris", "exact")


def test_contains_is_whole_words_and_regex_is_as_written():
    assert is_correct("The sky is BLUE, mostly.", "blue", "contains")
    assert not is_correct("bluish", "blue", "contains")
    assert not is_correct("I know", "no", "contains")
    assert is_correct("2024-01-31", r"^\d{4}-\d{2}-\d{2}$", "regex")
    assert not is_correct("2024-1-31", r"^\d{4}-\d{2}-\d{2}$", "regex")


# Five scored questions and one without an expected answer. What each worker and the reviewer answer, and so
# which are right (✓):
#                        A              B                    C             reviewer
#  q1 number 42          42 ✓           The answer is 42. ✓  41            42.0 ✓
#  q2 exact Paris        paris. ✓       It is Paris          (empty: fails) Paris ✓
#  q3 contains blue      grey           bluish               grey          Blue, by Rayleigh scattering ✓
#  q4 regex date         2024-01-31 ✓   31/01/2024           2024-1-31     Jan 31
#  q5 number 1000        1,001          1000.0 ✓             about 999     $1,000 ✓
#  q6 (no expected)      …
# A 3/5, B 2/5, C 0/5 (one no answer), final 4/5, any worker 4/5 (q3 none): gain +1 prompt = +20 points over A.
QUESTIONS = [
    {"id": "q1", "prompt": "Q1 What is 6 times 7?", "expected": 42},
    {"id": "q2", "prompt": "Q2 The capital of France?", "expected": "Paris", "match": "exact"},
    {"id": "q3", "prompt": "Q3 The sky's colour?", "expected": "blue", "match": "contains"},
    {"id": "q4", "prompt": "Q4 The last day of January 2024, ISO?", "expected": r"^\d{4}-\d{2}-\d{2}$",
     "match": "regex"},
    {"id": "q5", "prompt": "Q5 Ten times a hundred?", "expected": "1000"},
    {"id": "q6", "prompt": "Q6 Say hello."},
]
ANSWERS = {
    "A": {"Q1": "42", "Q2": "paris.", "Q3": "grey", "Q4": "2024-01-31", "Q5": "1,001", "Q6": "hello"},
    "B": {"Q1": "The answer is 42.", "Q2": "It is Paris", "Q3": "bluish", "Q4": "31/01/2024", "Q5": "1000.0",
          "Q6": "hi"},
    "C": {"Q1": "41", "Q2": "", "Q3": "grey", "Q4": "2024-1-31", "Q5": "about 999", "Q6": "hey"},
    "reviewer": {"Q1": "42.0", "Q2": "Paris", "Q3": "Blue, by Rayleigh scattering", "Q4": "Jan 31",
                 "Q5": "$1,000", "Q6": "Hello!"},
}


def score_rows(text: str) -> dict[str, tuple[str, ...]]:
    """The rows of the printed score table: label → (correct, accuracy, no answer)."""
    rows = [re.fullmatch(r"(.+?)\s+(\d+/\d+)\s+([\d.]+%)\s+(\d+)", line.strip()) for line in text.splitlines()]
    return {row.group(1): row.groups()[1:] for row in rows if row}


def answers_of(who: str):
    def respond(messages: list[dict]) -> str:
        text = messages[-1]["content"]
        question = next(q for q in ANSWERS[who] if f"{q} " in text)
        return ANSWERS[who][question]
    return respond


def test_scores_per_worker_final_and_ensemble_gain(tmp_path):
    with FakeServer() as a, FakeServer() as b, FakeServer() as c, FakeServer() as r:
        for fake, who in ((a, "A"), (b, "B"), (c, "C")):
            fake.model("w", latency=0.05, respond=answers_of(who))
        r.model("rev", latency=0.05, respond=answers_of("reviewer"))
        write_config(tmp_path / "c.json", {
            "worker_agents": [worker(f, "w", name=n) for f, n in ((a, "A"), (b, "B"), (c, "C"))],
            "reviewer_agent": worker(r, "rev", name="Rev")})
        (tmp_path / "in.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--json")
        table = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume")
    assert result.exit_code == 0, result.stderr
    scoring = json.loads(result.stdout)["scoring"]
    assert scoring["scored"] == 5
    assert [(w["name"], w["correct"], w["no_answer"]) for w in scoring["workers"]] == [
        ("A", 3, 0), ("B", 2, 0), ("C", 0, 1)]
    assert scoring["final"] == {"correct": 4, "scored": 5, "no_answer": 0, "accuracy": 0.8}
    assert scoring["any_worker"]["correct"] == 4
    assert scoring["best_worker"] == "A"
    assert scoring["ensemble_gain"] == pytest.approx(0.2) and scoring["ensemble_gain_prompts"] == 1

    lines = {line["id"]: line for line in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert lines["q1"]["score"] == {"expected": "42", "match": "number", "final": True,
                                    "workers": {"A": True, "B": True, "C": False}}
    assert lines["q2"]["score"]["workers"]["C"] is None  # no answer to score
    assert lines["q3"]["score"]["match"] == "contains" and lines["q3"]["score"]["final"] is True
    assert "score" not in lines["q6"]

    # Resumed with nothing left to run, the table still covers the whole input.
    assert table.exit_code == 0
    assert "nothing left to run: all 6 prompt(s) are answered" in table.stdout
    assert score_rows(table.stdout) == {"A": ("3/5", "60.0%", "0"), "B": ("2/5", "40.0%", "0"),
                                        "C": ("0/5", "0.0%", "1"), "final (synthesize)": ("4/5", "80.0%", "0"),
                                        "any worker right": ("4/5", "80.0%", "0")}
    assert "ensemble gain: +20.0 points (+1 prompt(s)): final 4 vs the best worker, A, 3 of 5" in table.stdout


def test_without_review_the_workers_are_scored_and_there_is_no_gain(tmp_path):
    with FakeServer() as a, FakeServer() as r:
        a.model("w", latency=0.02, text="42")
        r.model("rev", latency=0.02, text="42")
        write_config(tmp_path / "c.json", {"worker_agents": [worker(a, "w", name="A")],
                                           "reviewer_agent": worker(r, "rev")})
        (tmp_path / "in.jsonl").write_text('{"prompt": "6 x 7?", "expected": "42"}\n')
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--no-review")
        assert r.requests == []
    assert result.exit_code == 0
    assert score_rows(result.stdout) == {"A": ("1/1", "100.0%", "0"), "any worker right": ("1/1", "100.0%", "0")}
    assert "ensemble gain: none to measure (no review" in result.stdout
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["review"] is None and line["score"]["final"] is None and line["score"]["workers"] == {"A": True}



def test_with_refinement_rounds_each_worker_is_scored_on_its_own_first_answer(tmp_path):
    """Round 2 shows every worker the others' answers: from then on they are not single models any more."""
    def first_wrong_then_right(messages: list[dict]) -> str:
        return "42" if "41" in messages[-1]["content"] else "41"

    with FakeServer() as a, FakeServer() as b:
        a.model("w", latency=0.02, respond=first_wrong_then_right)
        b.model("w", latency=0.02, respond=first_wrong_then_right)
        write_config(tmp_path / "c.json", {"worker_agents": [worker(a, "w", name="A"), worker(b, "w", name="B")],
                                           "review": {"rounds": 2}})
        (tmp_path / "in.jsonl").write_text('{"prompt": "6 x 7?", "expected": 42}\n')
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json")
    assert result.exit_code == 0
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert [w["content"] for w in line["workers"]] == ["42", "42"]  # round 2
    assert line["score"]["workers"] == {"A": False, "B": False}  # round 1: "41"
