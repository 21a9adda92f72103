"""The one fold of a run's events (`RunTracker`), fed the events of real runs against fake servers; and what a
`RunResult` says of itself (`reply`, `no_answer_reason`, `final_source`)."""

from __future__ import annotations

import json

from conftest import worker
from fakes import FakeServer
from parallama import FleetClient
from parallama.config import as_fleet
from parallama.events import Delta, Finished, Queued, Started
from parallama.result import NO_ANSWER, FinalSource
from parallama.tracker import INTERRUPTED, RunTracker


async def recorded(fleet, **run):
    """A real run's result and every event it sent, in order."""
    events = []
    async with FleetClient(fleet) as client:
        result = await client.run("2 + 2?", on_event=events.append, **run)
    return result, events


async def test_rows_follow_a_run_where_one_worker_waits_for_a_slot():
    with FakeServer(slots=1) as shared, FakeServer(slots=1) as other:
        shared.model("a", latency=0.3, tokens=6)
        shared.model("c", latency=0.2, tokens=4)
        other.model("rev", latency=0.1, tokens=3)
        fleet = as_fleet({"worker_agents": [worker(shared, "a", name="A"), worker(shared, "c", name="C")],
                          "reviewer_agent": worker(other, "rev", name="Rev")})
        result, events = await recorded(fleet)

    tracker = RunTracker(fleet)
    states: dict[str, list[str]] = {}
    for event in events:
        row = tracker(event)
        if row is not None and (not states.get(row.name) or states[row.name][-1] != row.state):
            states.setdefault(row.name, []).append(row.state)
    assert list(tracker.rows) == [("workers", "A"), ("workers", "C"), ("review", "Rev")]
    assert states == {name: ["queued", "running", "done"] for name in ("A", "C", "Rev")}
    a, c, rev = tracker.rows.values()
    # C waited for A's slot, and the row says so (with the result's own numbers once it ended).
    assert c.queued_s(tracker.now()) == result.workers[1].queued_s >= 0.25
    assert a.queued_s(tracker.now()) == result.workers[0].queued_s < 0.1
    assert c.started_at is not None and a.ended_at is not None and c.started_at >= a.ended_at - 0.05
    assert (a.pieces, c.pieces, rev.pieces) == (6, 4, 3)
    assert a.tokens() == result.workers[0].completion_tokens and rev.tokens() == result.review.completion_tokens
    assert rev.tail == result.final[-len(rev.tail):] and rev.tail
    assert [row.result for row in tracker.rows.values()] == [*result.workers, result.review]
    # Run-level facts.
    assert tracker.run_id == result.run_id and tracker.strategy == "synthesize" and tracker.reviewed
    assert list(tracker.stage_opened) == ["workers", "review"]
    assert tracker.stage_opened["workers"] is a
    assert tracker.first_sent_at <= tracker.first_token_at <= tracker.ended_at
    assert tracker.completion_tokens == 6 + 4 + 3
    assert tracker.over and tracker.result is result and tracker.no_answer_reason is None
    assert tracker.in_flight() == ([], 0)


async def test_in_flight_and_queued_while_the_run_goes():
    """What serve's keepalive line reads: who is running, how many wait for a slot."""
    with FakeServer(slots=1) as shared:
        shared.model("m", latency=0.2, tokens=2)
        fleet = as_fleet({"worker_agents": [worker(shared, "m", name=n) for n in ("A", "B", "C")]})
        tracker = RunTracker(fleet, review=False)
        seen = []

        def watch(event) -> None:
            tracker(event)
            if isinstance(event, Started) and event.agent.name == "A":
                seen.append(tracker.in_flight())

        async with FleetClient(fleet) as client:
            await client.run("q", on_event=watch, review=False)
    assert seen == [(["A"], 2)]


async def test_a_failed_worker_row_has_its_error_and_its_fix_apart():
    with FakeServer() as fake:
        fake.model("ok", latency=0.05)
        fleet = as_fleet({"worker_agents": [worker(fake, "ok", name="Good"), worker(fake, "gone", name="Gone")]})
        result, events = await recorded(fleet)
    tracker = RunTracker()  # seeded by RunStarted
    for event in events:
        tracker(event)
    good, gone = tracker.rows[("workers", "Good")], tracker.rows[("workers", "Gone")]
    assert good.state == "done" and gone.state == "failed"
    assert gone.result is not None and gone.result.error_kind == "model_not_found"
    assert gone.error is not None and gone.fix is not None
    assert gone.result.error == f"{gone.error} — {gone.fix}" and "ollama pull gone" in gone.fix
    assert "ollama pull" not in gone.error and good.error is None and good.fix is None


async def test_a_reviewer_asked_again_in_its_stage_gets_a_second_row():
    """The judge's server refuses structured output: the same reviewer is asked again plainly (attempt 2)."""
    with FakeServer() as a, FakeServer() as b:
        a.model("w", latency=0.05, text="four")
        b.model("w", latency=0.05, text="4")
        a.model("judge", latency=0.05, reject_structured_output=True,
                text='{"scores": [{"response": "A", "score": 9, "reason": "ok"}, '
                     '{"response": "B", "score": 3, "reason": "meh"}]}')
        fleet = as_fleet({"worker_agents": [worker(a, "w", name="A"), worker(b, "w", name="B")],
                          "reviewer_agent": worker(a, "judge", name="J"), "review": {"strategy": "judge"}})
        result, events = await recorded(fleet)
    tracker = RunTracker(fleet)
    for event in events:
        tracker(event)
    first, second = [row for row in tracker.attempts if row.stage == "review"]
    assert (first.attempt, first.state) == (1, "failed") and (second.attempt, second.state) == (2, "done")
    assert tracker.rows[("review", "J")] is second  # the view's row is the latest attempt
    assert result.final_source == FinalSource("judge", "A") and str(result.final_source) == "judge:A"


async def test_when_every_worker_fails_the_result_and_the_tracker_say_why():
    with FakeServer() as fake:
        fake.model("bad", fault="500")
        fleet = as_fleet({"worker_agents": [worker(fake, "bad", name="X"), worker(fake, "gone", name="Y")],
                          "reviewer_agent": worker(fake, "bad", name="R")})
        result, events = await recorded(fleet)
    assert result.reply is None and result.reply_source is None and not result.answered
    reason = result.no_answer_reason
    assert reason is not None and reason.startswith(NO_ANSWER + ": ")
    assert all(w.error in reason for w in result.workers)
    tracker = RunTracker(fleet)
    for event in events:
        tracker(event)
    assert tracker.no_answer_reason == reason
    assert tracker.rows[("review", "R")].state == "waiting"  # never asked: there was nothing to review


def test_an_interrupted_run_has_no_result_and_says_so():
    from parallama.events import RunEnded

    tracker = RunTracker()
    assert tracker.no_answer_reason is None  # still going
    tracker(RunEnded("r", None))
    assert tracker.over and tracker.no_answer_reason == INTERRUPTED


async def test_reply_with_no_review_is_the_workers_answers():
    with FakeServer() as fake:
        fake.model("a", latency=0.05, text="alpha answer")
        fake.model("b", latency=0.05, text="beta answer")
        fake.model("c", fault="404")
        two = as_fleet({"worker_agents": [worker(fake, "a", name="Alpha"), worker(fake, "c", name="Gamma"),
                                          worker(fake, "b", name="Beta")]})
        one = as_fleet({"worker_agents": [worker(fake, "a", name="Alpha"), worker(fake, "c", name="Gamma")]})
        several, _ = await recorded(two)
        alone, _ = await recorded(one)
    assert several.final is None and several.final_source is None
    assert several.reply == "## Alpha\nalpha answer\n\n## Beta\nbeta answer"
    assert several.reply_source == FinalSource("workers") and several.no_answer_reason is None
    assert alone.reply == "alpha answer" and alone.answered
    assert json.loads(json.dumps(several.to_dict()))["final_source"] is None


async def test_reply_of_a_reviewed_run_is_its_final_answer():
    with FakeServer() as fake:
        fake.model("w", latency=0.05, text="four")
        fake.model("rev", latency=0.05, text="It is 4.")
        fleet = as_fleet({"worker_agents": [worker(fake, "w", name="W")], "reviewer_agent": worker(fake, "rev")})
        result, _ = await recorded(fleet)
    assert result.reply == result.final == "It is 4." and result.reply_source == FinalSource("review")
    assert result.to_dict()["final_source"] == "review"  # the JSON keeps its string


def test_final_source_is_written_and_read_back_as_the_json_has_it():
    for text, source in [("review", FinalSource("review")), ("workers", FinalSource("workers")),
                         ("judge:B: the second", FinalSource("judge", "B: the second")),
                         ("worker:A", FinalSource("worker", "A"))]:
        assert str(source) == text and FinalSource.read(text) == source and source == text
    assert FinalSource.read(None) is None and FinalSource.read("review:x") is None and FinalSource.read("?") is None


def test_events_for_an_agent_the_tracker_never_saw_queued_make_their_row():
    """A view that joins late (or a test feeding pieces) still gets a row per request."""
    fleet = as_fleet({"worker_agents": [{"api_url": "http://127.0.0.1:9/api/chat", "model": "m", "name": "W"}]})
    agent = fleet.workers[0]
    tracker = RunTracker()
    assert tracker(Delta("r", "workers", agent, "x")) is None  # no row yet: a piece alone makes none
    row = tracker(Queued("r", "workers", agent))
    assert row is not None and row.state == "queued" and list(tracker.rows) == [("workers", "W")]
    tracker(Started("r", "workers", agent, 0.0))
    tracker(Delta("r", "workers", agent, "hello "))
    tracker(Delta("r", "workers", agent, "world"))
    assert row.state == "running" and row.pieces == 2 and row.tail == "hello world"
    assert tracker(Finished("r", "workers", agent, _ok(agent))) is row and row.state == "done"


def _ok(agent):
    from parallama.result import AgentResult

    return AgentResult(agent.name, agent.model, agent.api_url, agent.protocol, "ok", "hello world",
                       completion_tokens=2)


async def test_a_judge_whose_scores_cannot_be_read_is_unusable_on_both_attempts():
    """It answered twice, and neither answer held scores: its rows are unusable (why, on each), never done."""
    with FakeServer() as fake:
        fake.model("w", latency=0.05, text="four")
        fake.model("judge", latency=0.05, text="Both look fine to me.")
        fleet = as_fleet({"worker_agents": [worker(fake, "w", name="A"), worker(fake, "w", name="B")],
                          "reviewer_agent": worker(fake, "judge", name="J"), "review": {"strategy": "judge"},
                          "servers": {fake.url: {"parallel": 2}}})
        result, events = await recorded(fleet)
    tracker = RunTracker(fleet)
    for event in events:
        tracker(event)
    first, second = [row for row in tracker.attempts if row.stage == "review"]
    assert (first.state, second.state) == ("unusable", "unusable")
    assert first.error == "its answer could not be read" and "unreadable answer, twice" in (second.error or "")
    # Each was said as the judge threw it away (`Rejected`), not guessed at the run's end.
    rejected = [e for e in events if type(e).__name__ == "Rejected"]
    assert [(e.agent.name, e.why) for e in rejected] == [("J", first.error), ("J", second.unusable)]
    assert tracker.changed == []
    assert result.reply_source is not None and result.reply_source.kind == "worker"


async def test_stop_ends_the_run_as_stopped_and_its_requests_in_flight_as_stopped():
    import asyncio

    from parallama.events import RunEnded

    with FakeServer() as fake:
        fake.model("quick", latency=0.05, text="four")
        fake.model("slow", latency=30, text="never")
        fleet = as_fleet({"worker_agents": [worker(fake, "quick", name="A"), worker(fake, "slow", name="B")],
                          "servers": {fake.url: {"parallel": 2}}})
        events: list = []
        async with FleetClient(fleet) as client:
            assert client.stop("no-such-run") is False
            task = asyncio.ensure_future(client.run("2 + 2?", run_id="r1", on_event=events.append))
            while not any(isinstance(e, Finished) for e in events):
                await asyncio.sleep(0.02)
            assert client.stop("r1") is True
            try:
                await task
            except asyncio.CancelledError:
                pass
            assert task.cancelled() and not client.running
    assert isinstance(events[-1], RunEnded) and events[-1].stopped and events[-1].result is None
    tracker = RunTracker(fleet, review=False)
    for event in events:
        tracker(event)
    assert [row.state for row in tracker.rows.values()] == ["done", "stopped"]
    assert tracker.stopped and tracker.no_answer_reason == INTERRUPTED
