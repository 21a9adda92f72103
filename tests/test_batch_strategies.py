"""`batch --strategies`: the workers once per prompt, every strategy's review over the same answers; each line holds
every strategy's final answer and score, the summary each strategy's accuracy, gain over the best worker and cost."""

from __future__ import annotations

import json
import re

from conftest import invoke, worker, write_config
from fakes import FakeServer

ANSWERS = {  # per prompt: what workers A, B and C say (the right answer is the prompt's number times two)
    "1": ("2", "2", "3"),
    "2": ("4", "5", "6"),
    "3": ("7", "7", "6"),
}


def worker_says(index: int):
    def respond(messages):
        text = messages[-1]["content"]
        if "FINAL RANKING" in messages[0]["content"]:
            return "FINAL RANKING:\n1. Response A\n2. Response B"
        number = re.search(r"double (\d)", text).group(1)
        return f"It is {ANSWERS[number][index]}."
    return respond


def reviewer_says(messages):
    """Synthesize and council: the first answer's number, plus one (wrong); the judge: B scored best."""
    text = messages[-1]["content"]
    if "Score each response" in messages[0]["content"] or "score" in messages[0]["content"].lower():
        labels = re.findall(r"### Response ([A-Z])", text)
        return json.dumps({"scores": [{"response": label, "score": 9 if i == 1 else 3, "reason": "ok"}
                                      for i, label in enumerate(labels)]})
    first = int(re.search(r"It is (\d+)", text).group(1))
    return f"Final: {first + 1}"


def test_strategies_compared_on_the_same_worker_answers(tmp_path):
    with FakeServer() as fake:
        for i, name in enumerate("abc"):
            fake.model(name, latency=0.05, respond=worker_says(i))
        fake.model("rev", latency=0.05, respond=reviewer_says)
        config = write_config(tmp_path / "fleet.json", {
            "worker_agents": [worker(fake, m, name=m.upper()) for m in "abc"],
            "reviewer_agent": worker(fake, "rev", name="Rev"), "servers": {fake.url: {"parallel": 4}}})
        prompts = tmp_path / "in.jsonl"
        prompts.write_text("".join(json.dumps({"id": f"q{n}", "prompt": f"double {n}", "expected": str(2 * int(n))})
                                   + "\n" for n in ANSWERS))
        out = tmp_path / "out.jsonl"
        shown = invoke("batch", str(prompts), "-o", str(out), "-c", str(config), "-q",
                       "--strategies", "synthesize,judge,vote")
        assert shown.exit_code == 0, shown.output
        lines = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
        worker_requests = [r for r in fake.requests if r.model in "abc"]
        assert len(worker_requests) == 3 * 3  # the workers once per prompt, whatever the strategies
        first = lines["q1"]
        assert set(first["strategies"]) == {"synthesize", "judge", "vote"}
        assert first["strategies"]["vote"]["final"] == "It is 2." and first["strategies"]["vote"]["final_source"] == "vote"
        assert first["strategies"]["vote"]["tally"][0] == {"answer": "2", "count": 2, "workers": ["A", "B"]}
        assert first["strategies"]["vote"]["review_requests"] == 0
        assert first["strategies"]["synthesize"]["review_requests"] == 1
        assert first["strategies"]["synthesize"]["review_tokens"] > 0
        assert first["score"]["strategies"]["synthesize"] is False and first["score"]["strategies"]["vote"] is True
        # Prompt 2: all differ, so vote falls back to the reviewer; prompt 3: vote picks the wrong majority.
        assert lines["q2"]["strategies"]["vote"]["warnings"][0].startswith("vote: no majority")
        assert lines["q3"]["score"]["strategies"]["vote"] is False

        # The summary: per worker, per strategy, gain over the best worker (A: 2 right of 3), cost.
        text = shown.stdout
        assert "strategies over the same worker answers (best worker: A, 2/3)" in text
        rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] and
                line.split()[0] in ("synthesize", "judge", "vote")}
        assert rows["vote"][1:4] == ["1/3", "33.3%", "-33.3"]
        assert rows["synthesize"][1:4] == ["0/3", "0.0%", "-66.7"] and "judge" in rows

        summary = json.loads(invoke("batch", str(prompts), "-o", str(out), "-c", str(config), "-q", "--resume",
                                    "--json", "--strategies", "synthesize,judge,vote").stdout)
        by_name = {s["name"]: s for s in summary["scoring"]["strategies"]}
        assert by_name["synthesize"]["correct"] == 0 and by_name["synthesize"]["gain"] == -0.6667
        assert by_name["vote"]["gain_prompts"] == -1
        assert summary["review_cost"]["synthesize"]["prompts"] == 3
        assert summary["review_cost"]["vote"]["review_requests"] == 1  # the one fallback to the reviewer
        assert summary["ran"] == 0  # resumed: nothing run again, the scores and costs read from the file


def test_strategies_usage_errors(tmp_path):
    with FakeServer() as fake:
        fake.model("a")
        bare = write_config(tmp_path / "bare.json", {"worker_agents": [worker(fake, "a")]})
        prompts = tmp_path / "in.txt"
        prompts.write_text("hi\n")
        for args, words in [(["--strategies", "vote,nope"], "unknown 'nope'"),
                            (["--strategies", "judge,vote"], "judge needs a reviewer_agent"),
                            (["--strategies", "vote", "--no-review"], "leave out --no-review")]:
            shown = invoke("batch", str(prompts), "-c", str(bare), *args)
            assert shown.exit_code == 2 and words in shown.stderr, shown.stderr
        ok = invoke("batch", str(prompts), "-c", str(bare), "-q", "--strategies", "vote")
        assert ok.exit_code == 0 and json.loads(ok.stdout.splitlines()[0])["strategies"]["vote"]["final"]
