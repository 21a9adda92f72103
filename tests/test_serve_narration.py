"""serve's progress tells what happened, per strategy and outcome, as the tracker has read it: a ranking or a
judge's scores that could not be read are said so (never ✓), a vote's fallback to the reviewer says why before the
reviewer writes. Read through the `ollama` client, as Open WebUI's users see it (the thinking block)."""

from __future__ import annotations

import re

import ollama

from conftest import worker

ASK = [{"role": "user", "content": "What is it?"}]
SCORES = ('{"scores": [{"response": "A", "score": 5, "reason": "too short"}, '
          '{"response": "B", "score": 9, "reason": "complete"}]}')


def is_ranking_request(messages) -> bool:
    return "FINAL RANKING" in messages[0]["content"]


def ranker(answer: str, *, readable: bool = True):
    """A worker that answers with `answer`, and ranks what it is shown (in the order shown), or not readably."""
    def respond(messages):
        if not is_ranking_request(messages):
            return answer
        if not readable:
            return "They are all fine answers."
        labels = re.findall(r"### Response ([A-Z])\n", messages[-1]["content"])
        return "FINAL RANKING:\n" + "\n".join(f"{i + 1}. Response {label}" for i, label in enumerate(labels))
    return respond


async def progress(running, model: str) -> tuple[str, str]:
    parts = [p async for p in await ollama.AsyncClient(host=running.url).chat(model, messages=ASK, stream=True)]
    return "".join(p.message.thinking or "" for p in parts), "".join(p.message.content or "" for p in parts)


async def test_council_says_which_rankings_were_read_and_which_were_left_out(servers, serve):
    a, b, c = servers
    a.model("m", latency=0.05, respond=ranker("Alpha's answer."))
    b.model("m", latency=0.05, respond=ranker("Beta's answer.", readable=False))
    c.model("chair", latency=0.05, text="The council's final answer.")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "reviewer_agent": worker(c, "chair", name="Chair"), "review": {"strategy": "council"}})
    thinking, content = await progress(running, "parallama:council")
    assert re.search(r"✓ A ranked the others in \d", thinking)
    assert "⚠ B's ranking was left out: no FINAL RANKING section" in thinking
    assert "✓ B ranked" not in thinking
    assert content == "The council's final answer."


async def test_vote_without_a_majority_says_so_before_the_reviewer_writes_the_reply(servers, serve):
    a, b, c = servers
    a.model("m", latency=0.05, text="4")
    b.model("m", latency=0.05, text="5")
    c.model("rev", latency=0.05, text="It is 4.")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "reviewer_agent": worker(c, "rev", name="Rev"), "review": {"strategy": "vote"}})
    thinking, content = await progress(running, "parallama:vote")
    said = thinking.index("No majority (all answers differ): the reviewer writes the final answer from theirs.")
    assert said < thinking.index("▸ Rev (rev) is writing the final answer")
    assert "scored" not in thinking and "vote: no majority" not in thinking  # not said twice, nor as a judge
    assert content == "It is 4."  # the reviewer's text, streamed as the reply


async def test_vote_with_a_majority_says_the_reply_is_the_majoritys(servers, serve):
    a, b, c = servers
    for fake in (a, b):
        fake.model("m", latency=0.05, text="4")
    c.model("rev", text="unused")
    running = await serve({"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")],
                           "reviewer_agent": worker(c, "rev", name="Rev"), "review": {"strategy": "vote"}})
    thinking, content = await progress(running, "parallama:vote")
    assert "The reply is the majority's answer." in thinking and "No majority" not in thinking
    assert content == "4" and not c.requests


async def test_judge_says_scored_only_for_scores_it_could_read(servers, serve):
    a, b, c = servers
    a.model("m", latency=0.05, text="A short answer.")
    b.model("m", latency=0.05, text="A complete answer.")
    c.model("judge", latency=0.05, text=SCORES)
    config = {"worker_agents": [worker(a, "m", name="W1"), worker(b, "m", name="W2")],
              "reviewer_agent": worker(c, "judge", name="Judge"), "review": {"strategy": "judge"}}
    running = await serve(config)
    thinking, content = await progress(running, "parallama:judge")
    assert thinking.count("▸ Judge (judge) is scoring the answers") == 1
    assert re.search(r"✓ Judge scored them in \d", thinking) and "could not be read" not in thinking
    assert content == "A complete answer."
    c.model("judge", latency=0.05, text="Both are good.")  # no scores, twice
    thinking, content = await progress(running, "parallama:judge")
    assert "▸ Judge (judge) is scoring the answers again (its first answer could not be read)" in thinking
    assert "✓ Judge scored" not in thinking
    assert thinking.count("⚠ Judge's scores could not be read") == 2
    assert content == "A short answer."  # the first successful worker answer, as the warning says
    assert "the final answer is the first successful worker answer" in thinking


async def test_a_servers_500_traceback_is_one_line_of_cause_never_its_paths(servers, serve):
    a, b, c = servers
    a.model("m", latency=0.05, text="A short answer.")
    b.model("m", latency=0.05, text="A complete answer.")
    c.model("judge", fault="500_traceback")
    running = await serve({"worker_agents": [worker(a, "m", name="W1"), worker(b, "m", name="W2")],
                           "reviewer_agent": {"name": "Judge", "api_url": c.url + "/v1", "model": "judge"},
                           "review": {"strategy": "judge"}})
    thinking, content = await progress(running, "parallama:judge")
    assert "HTTP 500: ValueError: from_string: error parsing grammar file: parsed_grammar.rules is empty" in thinking
    assert "Traceback" not in thinking and "/home/user" not in thinking and "site-packages" not in thinking
    assert content == "A short answer."
