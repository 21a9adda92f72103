"""The one rule for "these two answers say the same" (`short_answer`), shared by vote and batch scoring: the last
number as an exact number, else the short answer in words; nothing for an answer with no word and no number; and
numbers too big to be numbers are text, at once (issue 33, items 10, 18 and 19)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import invoke, worker, write_config, write_jsonl
from fakes import FakeServer
from parallama import FleetClient
from parallama.scoring import is_correct
from parallama.short_answer import answer_key

GERMANY = "What is the capital of Germany?"

# Replies as small models write them. Each group must agree within itself and with no other group.
REPLIES = {
    GERMANY: {
        "berlin": ["Berlin.", "It's Berlin!", "The capital of Germany is Berlin.", "berlin", "**Berlin**",
                   "Berlin is the capital of Germany.", "Sure! The capital of Germany is Berlin, a city of 3.7M.",
                   "Answer: Berlin", "I think the answer is \"Berlin\".", "The answer is: **Berlin**.",
                   "Germany's capital is Berlin.", "  BERLIN  ", "Berlin, of course.",
                   "Great question.\nThe capital of Germany is Berlin, which is also its largest city."],
        "bern": ["Bern", "The capital of Germany is Bern.", "It's Bern."],
        "munich": ["Munich!", "I believe it is Munich.", "**Answer:** Munich"],
        "bonn west": ["Bonn was the capital of West Germany."],
    },
    "What is 6 times 7?": {
        "42": ["42", "The answer is 42.", "6 × 7 = 42", "$42", "42.0", "It's 42.00!",
               "First, 6 × 7: 6 × 5 = 30, 6 × 2 = 12, and 30 + 12 = 42.", "**Step 1:** 6 * 7 = 42",
               "Let me think. 6 times 7 is 40 + 2.\nFinal answer: 42"],
        "41": ["41", "I make it 41, I think"],
        "-42": ["-42", "−42"],
        "4.2": ["4.2", "It is 4.20"],
    },
}


def test_replies_that_say_the_same_agree_and_others_do_not():
    for question, groups in REPLIES.items():
        for key, replies in groups.items():
            assert {reply: answer_key(reply, question) for reply in replies} == {reply: key for reply in replies}


def test_without_the_question_the_short_answers_still_agree_where_the_reply_is_short():
    assert answer_key("Berlin.") == answer_key("It's Berlin!") == answer_key("**Berlin**") == "berlin"
    assert answer_key("Berlin") != answer_key("Bern")
    assert answer_key("Paris, France.") != answer_key("Paris, Texas.")


def test_an_answer_with_no_word_and_no_number_has_no_key():
    for silent in ("", "...", "?!", "  \n ", "— — —", "**", "\"\""):
        assert answer_key(silent, GERMANY) is None, silent
    assert answer_key("It is.", GERMANY) == "it is"  # filler only: still a (poor) answer, not nothing


def test_numbers_compare_exactly_as_batch_scoring_does():
    # Issue 33, item 19: vote compared through float to 10 digits, batch scoring exactly.
    assert answer_key("1e-400") != answer_key("0")
    assert answer_key("0.30000000000000004") != answer_key("0.3")
    assert answer_key("0.1e1") == answer_key("1") == answer_key("1.000")
    assert answer_key("12345678901234567890.5") != answer_key("12345678901234567890.50000001")
    for answer, expected in (("1e-400", "0"), ("0.30000000000000004", "0.3")):
        assert not is_correct(answer, expected, "number")
    assert is_correct("0.30000000000000004", "0.30000000000000004", "number")


def test_too_big_numbers_are_text_and_cost_no_time():
    # Issue 33, item 10: 4,300+ digits raised ValueError (int's string limit), 1e10000000 blocked for 15 s.
    started = time.perf_counter()
    huge = "9" * 5000
    assert answer_key(huge) == huge and answer_key("1e5000") == "1e5000" and answer_key("1e10000000") == "1e10000000"
    assert answer_key(f"The answer is {huge}.") == huge
    assert not is_correct(huge, "42", "number") and not is_correct("1e10000000", "1", "number")
    assert is_correct("1e5000", "1e5000", "answer")
    assert answer_key("1e1000") == "1E+1000" and answer_key("1" * 1000) == "1" * 1000  # the largest still count
    assert time.perf_counter() - started < 5.0  # the old code took 15 s for 1e10000000 alone


def test_batch_scores_answers_by_the_short_answer(tmp_path):
    with FakeServer() as fake:
        replies = {"wrong": "It's Bern!", "capital": "The capital of Germany is Berlin.", "sum": "So it is 42.",
                   "huge": "1e10000000", "digits": "9" * 5000}
        fake.model("w", latency=0.02, respond=lambda messages: next(
            text for word, text in replies.items() if word in messages[-1]["content"]))
        write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "w", name="A")],
                                           "review": {"strategy": "vote"}})
        write_jsonl(tmp_path / "in.jsonl", [
            {"id": "capital", "prompt": "The capital of Germany?", "expected": "Berlin"},
            {"id": "wrong", "prompt": "The capital of Germany? (wrong)", "expected": "Berlin"},
            {"id": "sum", "prompt": "What is the sum of 40 and 2?", "expected": 42},
            {"id": "huge", "prompt": "huge?", "expected": 1},
            {"id": "digits", "prompt": "digits?", "expected": "9"}])
        result = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--json")
        again = invoke("batch", "in.jsonl", "-o", "out.jsonl", "-c", "c.json", "--resume", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = {line["id"]: line for line in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert {k: (v["score"]["match"], v["score"]["workers"]["A"]) for k, v in lines.items()} == {
        "capital": ("answer", True), "wrong": ("answer", False), "sum": ("number", True),
        "huge": ("number", False), "digits": ("number", False)}
    assert {k: v["final"] for k, v in lines.items()}["huge"] == "1e10000000"  # vote kept the one answer
    assert again.exit_code == 0 and json.loads(again.stdout)["scoring"]["scored"] == 5


@pytest.mark.parametrize("hostile", ["9" * 5000, "1e5000", "1e10000000"])
async def test_vote_survives_huge_numbers(hostile):
    with FakeServer() as fake:
        fake.model("a", latency=0.02, text=hostile)
        fake.model("b", latency=0.02, text=f"It is {hostile}")
        fake.model("c", latency=0.02, text="7")
        config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abc"],
                  "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "vote"}}
        started = time.perf_counter()
        async with FleetClient(config) as client:
            result = await client.run("What is it?")
        assert time.perf_counter() - started < 10  # 1e10000000 alone blocked the old code 15 s
    assert result.final_source == "vote" and result.final == hostile
    assert result.tally[0]["count"] == 2 and result.tally[0]["workers"] == ["A", "B"]


async def test_vote_picks_berlin_three_of_three():
    with FakeServer() as fake:
        for model, text in (("a", "Berlin."), ("b", "It's Berlin!"), ("c", "The capital of Germany is Berlin.")):
            fake.model(model, latency=0.02, text=text)
        # required: two agreeing answers would settle the vote and cut the third, whichever it is.
        config = {"worker_agents": [worker(fake, m, name=m.upper(), required=True) for m in "abc"],
                  "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "vote"}}
        async with FleetClient(config) as client:
            result = await client.run(GERMANY)
    assert result.final == "Berlin." and result.final_source == "vote"
    assert result.tally == [{"answer": "berlin", "count": 3, "workers": ["A", "B", "C"]}]


async def test_answers_that_say_nothing_cast_no_vote():
    # Issue 33, item 18: `...` and `?!` agreed (both normalise to ""), out-voted Paris and cut it.
    with FakeServer() as fake:
        fake.model("a", latency=0.02, text="...")
        fake.model("b", latency=0.02, text="?!")
        fake.model("c", latency=0.5, text="Paris")
        config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abc"],
                  "servers": {fake.url: {"parallel": 3}}, "review": {"strategy": "vote"}}
        async with FleetClient(config) as client:
            result = await client.run("The capital of France?")
    assert [w.status for w in result.workers] == ["ok", "ok", "ok"]  # Paris was not cut
    assert result.final == "Paris" and result.final_source == "worker:C"
    assert result.tally == [{"answer": "paris", "count": 1, "workers": ["C"]}]
    assert any("A, B gave no word and no number; cast no vote" in w for w in result.warnings)


async def test_vote_counts_numbers_exactly():
    # Issue 33, item 19: through float to 10 digits, 1e-400 voted with 0 and 0.30000000000000004 with 0.3.
    with FakeServer() as fake:
        for model, text in (("a", "0.30000000000000004"), ("b", "0.3"), ("c", "It is 0.30000000000000004"),
                            ("d", "1e-400"), ("e", "0")):
            fake.model(model, latency=0.02, text=text)
        config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abcde"],
                  "servers": {fake.url: {"parallel": 5}}, "review": {"strategy": "vote"}}
        async with FleetClient(config) as client:
            result = await client.run("What is 0.1 + 0.2 in floating point?")
    assert [(c["answer"], c["count"]) for c in result.tally] == [
        ("0.30000000000000004", 2), ("0.3", 1), ("1E-400", 1), ("0", 1)]
    assert result.final == "0.30000000000000004"
