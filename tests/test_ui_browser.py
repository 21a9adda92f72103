"""The web page in a real headless Chromium, against `parallama serve` and fake model servers: what a person sees
while a run goes on and after it, a failing worker, hostile answers, history, follow-ups, the key, and a screenshot.

Outside CI these tests skip when no Chromium is found (saying how to install it); in CI (`CI=true`) they fail."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from browser import INSTALL_HINT, ServeThread, find_chromium, open_chromium
from conftest import REPO, worker
from fakes import FakeServer, free_port

HOSTILE = ('Look: <script>window.__pwned = 1</script> and <img src=x onerror="window.__pwned = 2"> '
           "and [a link](javascript:window.__pwned=3) and <b>bold</b>")
REVIEWED = """Rayleigh scattering: **shorter wavelengths scatter more**.

- Blue light (~450 nm) scatters about 5.5× more than red (~700 nm).
- At sunset the light crosses more air: the blues are scattered away, the reds remain.

```
I ∝ 1/λ⁴
```"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Any:
    found = find_chromium()
    if isinstance(found, str):
        message = f"the browser tests need a headless Chromium: {found}; {INSTALL_HINT}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    driver = open_chromium(*found, tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


class Page:
    """The page as a person uses it: open, type, click, read."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, served: ServeThread) -> "Page":
        self.driver.get(served.url + "/ui/")
        self.wait(lambda: self.visible("#app") or self.visible("#key-form"), "the page did not come up")
        return self

    def wait(self, condition: Callable[[], Any], message: str, timeout: float = 60) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _: condition(), message)

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements("css selector", css)

    def text(self, css: str) -> str:
        """What a person reads there, with the turn's folded work opened first (as a click on its summary does)."""
        self.script("const work = document.getElementById('work'); if (work) work.open = true;")
        found = self.all(css)
        return found[0].text if found else ""

    def visible(self, css: str) -> bool:
        found = self.all(css)
        return bool(found) and found[0].is_displayed()

    def card(self, agent: str, stage: str = "workers") -> str:
        return self.text(f'.card[data-stage="{stage}"][data-agent="{agent}"]')

    def badge(self, agent: str, stage: str = "workers") -> str:
        return self.text(f'.card[data-stage="{stage}"][data-agent="{agent}"] .badge')

    def ask(self, prompt: str, strategy: str | None = None) -> None:
        from selenium.webdriver.common.keys import Keys

        if strategy:
            from selenium.webdriver.support.ui import Select

            Select(self.find("#strategy")).select_by_value(strategy)
        box = self.find("#prompt")
        box.send_keys(prompt)
        box.send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter sends
        self.wait(lambda: box.get_property("value") == "", "the run did not start")  # cleared once it has

    def wait_until_done(self, timeout: float = 60) -> None:
        self.wait(lambda: self.text("#send") == "Send" and self.text("#final-source"), "the run did not end", timeout)

    def script(self, code: str, *args: Any) -> Any:
        return self.driver.execute_script(code, *args)

    def errors(self) -> list[str]:
        """What the page's console said at level error (a script error, a refused resource, a CSP report)."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture
def page(chromium: Any) -> Any:
    chromium.get_log("browser")  # what an earlier test left
    yield Page(chromium)
    chromium.get("about:blank")


def guide_config(a: FakeServer, b: FakeServer, c: FakeServer, *, latency: float = 0.6) -> dict[str, Any]:
    """The guide's three workers, A and C sharing the 1-slot server `a` (C waits for A), B on `b`, the reviewer on
    `c`; their answers as real models might give them."""
    a.model("llama3:8b", latency=latency * 1.4, tokens=20, text=(
        "Sunlight is scattered by the molecules of the air, and blue light, with its shorter wavelength, is "
        "scattered much more than red: that scattered blue reaches our eyes from every direction of the sky."))
    b.model("mistral", latency=latency * 1.1, tokens=20, text=(
        "Because of **Rayleigh scattering**: the intensity of scattered light goes as 1/λ⁴, so blue is scattered "
        "far more than red. Violet is scattered even more, but our eyes are less sensitive to it."))
    a.model("deepseek-coder", latency=latency, tokens=15, text=(
        "Blue light has a short wavelength, and air molecules scatter short wavelengths most strongly "
        "(Rayleigh scattering), so the sky looks blue."))
    c.model("llama3:70b", latency=latency, tokens=25, text=REVIEWED)
    return {"reviewer_agent": worker(c, "llama3:70b", name="Reviewer (Llama 3 70B)"),
            "worker_agents": [worker(a, "llama3:8b", name="Worker A (Llama 3 8B)"),
                              worker(b, "mistral", name="Worker B (Mistral)"),
                              worker(a, "deepseek-coder", name="Worker C (DeepSeek Coder)")]}


A, B, C, REVIEWER = "Worker A (Llama 3 8B)", "Worker B (Mistral)", "Worker C (DeepSeek Coder)", "Reviewer (Llama 3 70B)"


def test_a_prompt_fills_three_worker_cards_live_then_the_final_answer_appears(page, servers):
    a, b, c = servers
    config = guide_config(a, b, c, latency=1.5)
    held = threading.Event()  # A stops half-way through its answer until the test has looked
    a.model("llama3:8b", **{**vars(a.models["llama3:8b"]), "hold": held, "hold_after": 10})
    with ServeThread(config) as served:
        page.open(served)
        assert page.text("#fleet").startswith("3 workers: Worker A (Llama 3 8B), Worker B (Mistral)")
        try:
            page.ask("Why is the sky blue?")
            # While it runs: A and B stream, C waits for A's slot on the shared server, and the load says so.
            shared = a.url.replace("http://127.0.0.1", "localhost")
            page.wait(lambda: page.badge(A) == "running" and "Sunlight" in page.card(A), "A did not stream")
            assert page.badge(C) == f"queued on {shared}" and "queued" in page.text(f'.card[data-agent="{C}"] .stats')
            page.wait(lambda: "1/1 in flight · 1 waiting" in page.text(f'.server[data-server="{a.url.replace("127.0.0.1", "localhost")}"]'),
                      "the load did not show the waiting request")
            partial = page.card(A)
            assert "every direction of the sky." not in partial  # live: the answer is still coming in
        finally:
            held.set()
        page.wait(lambda: page.badge(C) in ("running", "done"), "C never got the slot")  # (its bar is checked below)
        page.wait_until_done()
        # Done: every card full, the final answer rendered from Markdown, with its source.
        for name, words in [(A, "every direction of the sky."), (B, "less sensitive to it."), (C, "looks blue.")]:
            assert page.badge(name) == "done" and words in page.card(name)
            stats = page.text(f'.card[data-agent="{name}"] .stats')
            assert "ran " in stats and "tokens" in stats and "tok/s" in stats
        assert "queued 1." in page.text(f'.card[data-agent="{C}"] .stats') or "queued 2." in page.text(
            f'.card[data-agent="{C}"] .stats')
        assert page.find('.card[data-agent="Worker B (Mistral)"] .body strong').text == "Rayleigh scattering"
        assert page.find("#final-body strong").text == "shorter wavelengths scatter more"
        assert "I ∝ 1/λ⁴" in page.find("#final-body pre").text
        assert page.text("#final-source").startswith("written by the reviewer")
        assert page.badge(REVIEWER, "review") == "done"
        # The timeline: one row per agent, C waiting then running, the reviewer after the workers.
        rows = page.all(".tl-row[data-agent]")
        assert [r.get_attribute("data-agent") for r in rows] == [A, B, C, REVIEWER]
        assert page.all(f'.tl-row[data-agent="{C}"] .tl-bar.queued') and page.all(
            f'.tl-row[data-agent="{REVIEWER}"] .tl-bar.review')
        assert "workers ran at once" in page.text("#timeline-note")
        # The history has it, and the copy button gives the Markdown source.
        page.wait(lambda: "Why is the sky blue?" in page.text("#history"), "the run is not in the history")
        page.driver.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": served.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        page.find("#copy").click()
        page.wait(lambda: page.text("#copy") == "Copied", "copy did not say so")
        copied = page.driver.execute_async_script(
            "const done = arguments[0]; navigator.clipboard.readText().then(done, (e) => done('failed: ' + e))")
        assert copied == REVIEWED
        assert page.errors() == []


def test_a_failing_worker_shows_its_error_with_the_fix(page, servers):
    a, b, c = servers
    a.model("m", latency=0.3, text="Four.")
    c.model("rev", latency=0.2, text="It is four.")
    nowhere = free_port()
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "m", name="A"), worker(b, "missing-model", name="B"),
                                {"api_url": f"http://127.0.0.1:{nowhere}/api/chat", "model": "m", "name": "C"}]}
    with ServeThread(config) as served:
        page.open(served).ask("2 + 2?")
        page.wait_until_done()
        assert page.badge("B") == "failed" and page.badge("C") == "failed" and page.badge("A") == "done"
        missing = page.text('.card[data-agent="B"] .error-line')
        assert "missing-model" in missing and "ollama pull missing-model" in missing
        refused = page.text('.card[data-agent="C"] .error-line')
        assert f"127.0.0.1:{nowhere}" in refused and "start it with" in refused
        assert page.all('.tl-row[data-agent="B"] .tl-bar.failed')
        assert page.text("#final-body") == "It is four."
        assert "1/3 answered" in page.text("#history")


def test_every_worker_failing_says_there_is_no_answer(page, servers):
    a, _, c = servers
    c.model("rev", latency=0.1)
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "gone", name="A"), worker(a, "gone-too", name="B")]}
    with ServeThread(config) as served:
        page.open(served).ask("2 + 2?")
        page.wait(lambda: page.text("#send") == "Send" and "no answer" in page.text("#final-body"), "no verdict")
        assert "every worker failed" in page.text("#final-body") and "ollama pull gone" in page.text("#final-body")


def test_markup_in_answers_and_prompts_is_shown_as_text_and_runs_nothing(page, servers):
    a, b, c = servers
    a.model("m", latency=0.2, text=HOSTILE)
    b.model("m", latency=0.2, text="A plain answer.")
    c.model("rev", latency=0.2, text=HOSTILE)
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B <img src=x onerror=alert(1)>")]}
    with ServeThread(config) as served:
        page.open(served).ask('<img src=x onerror="window.__pwned = 5"> what now?')
        page.wait_until_done()
        for shown in (page.text("#final-body"), page.card("A")):
            assert "<script>window.__pwned = 1</script>" in shown and '<img src=x onerror="window.__pwned = 2">' in shown
            assert "<b>bold</b>" in shown and "[a link](javascript:window.__pwned=3)" in shown
        assert page.text("#run-prompt") == '<img src=x onerror="window.__pwned = 5"> what now?'
        assert "B <img src=x onerror=alert(1)>" in page.text("#fleet")
        page.wait(lambda: "what now?" in page.text("#history"), "the run is not in the history")
        # Nothing became an element, nothing ran, nothing was even tried.
        assert page.script("return document.querySelectorAll('#app img, #app b, #app a').length") == 0
        assert [s.get_attribute("src") for s in page.all("script")] == [served.url + "/ui/app.js"]
        assert page.script("return window.__pwned") is None
        assert page.errors() == []


def test_a_run_reopens_from_history_in_full(page, servers):
    a, b, c = servers
    a.model("m", latency=0.2, text="Alpha says four.")
    b.model("m", latency=0.3, text="Beta says 4.")
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]}
    c.model("rev", latency=0.1, text=json.dumps({"scores": [
        {"response": "A", "score": 5, "reason": "says it in words"}, {"response": "B", "score": 9, "reason": "exact"}]}))
    with ServeThread(config) as served:
        page.open(served).ask("First: what is 2 + 2?", strategy="judge")
        page.wait_until_done()
        assert "9/10" in page.text("#verdict") and "exact" in page.text("#verdict")
        c.model("rev", latency=0.1, text="Paris.")
        page.ask("Second: the capital of France?", strategy="synthesize")
        page.wait_until_done()
        page.driver.refresh()  # a new page: nothing on screen but the history
        page.open(served)
        page.wait(lambda: "Second" in page.text("#history") and "First" in page.text("#history"), "no history")
        assert page.visible("#run") is False
        page.find("#search").send_keys("first 2")
        page.wait(lambda: len(page.all(".history-item")) == 1, "the search did not narrow the history")
        assert "First: what is 2 + 2?" in page.text(".history-item") and "judge" in page.text(".history-item")
        page.find(".history-item").click()
        page.wait(lambda: page.text("#final-body") == "Beta says 4.", "the run did not reopen")
        assert page.text("#run-prompt") == "First: what is 2 + 2?"
        assert page.badge("A") == "done" and "Alpha says four." in page.card("A") and "Beta says 4." in page.card("B")
        assert page.text("#final-source").startswith("the judge's pick: B's answer")
        assert "says it in words" in page.text("#verdict") and "5/10" in page.text("#verdict")
        assert [r.get_attribute("data-agent") for r in page.all(".tl-row[data-agent]")] == ["A", "B", "Rev"]
        assert "ran " in page.text('.card[data-agent="B"] .stats')
        assert page.errors() == []


def test_a_follow_up_continues_the_conversation(page, servers):
    a, b, c = servers
    a.model("m", latency=0.1, text="Four.")
    b.model("m", latency=0.1, text="4")
    c.model("rev", latency=0.1, text="The answer is 4.")
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]}
    with ServeThread(config) as served:
        page.open(served).ask("2 + 2?")
        page.wait_until_done()
        assert "continues this conversation" in page.text("#ask-note")
        page.ask("And times 3?")
        page.wait_until_done()
        sent = a.requests[-1].messages
        assert [m["content"] for m in sent[-3:]] == ["2 + 2?", "The answer is 4.", "And times 3?"]
        earlier = page.text("#conversation")  # the thread above the turn: the question, then the answer
        assert earlier.index("2 + 2?") < earlier.index("The answer is 4.")
        page.find("#new").click()
        assert page.text("#ask-note") == ""
        page.ask("Fresh question")
        page.wait_until_done()
        assert [m["content"] for m in a.requests[-1].messages] == ["Fresh question"]


def test_the_council_shows_each_rankers_order_and_the_aggregate(page, servers):
    a, b, c = servers

    def ranker(answer: str, order: str) -> Callable[[list[dict]], str]:
        def respond(messages: list[dict]) -> str:
            if "FINAL RANKING" in messages[0]["content"]:
                return f"Both fine.\nFINAL RANKING:\n{order}"
            return answer
        return respond

    a.model("m", latency=0.1, respond=ranker("Alpha.", "1. Response A"))
    b.model("m", latency=0.1, respond=ranker("Beta.", "nothing readable"))
    held = threading.Event()  # the reviewer writes nothing until the test has read the ranking
    c.model("rev", latency=0.8, text="The council's answer.", hold=held)
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]}
    with ServeThread(config) as served:
        try:
            page.open(served).ask("Which?", strategy="council")
            # The ranking is shown while the reviewer still writes.
            page.wait(lambda: "Aggregate" in page.text("#verdict"), "no ranking shown")
            assert page.badge("Rev", "review") in ("running",
                                                   "queued on " + c.url.replace("http://127.0.0.1", "localhost"))
            assert "B: left out" in page.text("#verdict") and "A: 1. B" in page.text("#verdict")
            assert page.badge("A", "ranking") == "done" and page.badge("B", "ranking") == "unusable"
            assert "ranking left out" in page.text('.card[data-stage="ranking"][data-agent="B"] .error-line')
        finally:
            held.set()
        page.wait_until_done()
        assert page.text("#final-body") == "The council's answer."


def test_stop_cancels_the_run_and_frees_the_servers(page, servers):
    a, b, c = servers
    a.model("m", latency=30)
    b.model("m", latency=30)
    config = {"worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]}
    with ServeThread(config) as served:
        page.open(served).ask("slow")
        page.wait(lambda: all(s.requests and s.requests[0].started for s in (a, b)), "the requests were not sent")
        page.find("#send").click()  # Stop
        page.wait(lambda: a.requests[0].disconnected and b.requests[0].disconnected, "the run went on")
        page.wait(lambda: page.text("#send") == "Send", "the page did not end the run")
        assert "stopped" in page.text("#final-body") and page.badge("A") == "stopped" and page.badge("B") == "stopped"
        assert page.all('.tl-row[data-agent="A"] .tl-bar.stopped') and not page.all(".tl-bar.failed")
        assert not page.all(".card.state-failed")
        # The history says so at once, counting every worker of the run; reopened, it says Stop was pressed.
        page.wait(lambda: "stopped" in page.text(".history-item"), "the history item was not updated")
        assert "0/2 answered" in page.text(".history-item") and "running" not in page.text(".history-item")
        page.wait(lambda: served.call(lambda: not served.running.service.runs), "the run is still counted")
        page.find(".history-item").click()
        page.wait(lambda: "Stop was pressed" in page.text("#final-body"), "the reopened run did not say why it ended")
        assert "Ctrl-C" not in page.text("#final-body")


def test_with_an_api_key_the_page_asks_for_it_once(page, servers):
    a, b, c = servers
    a.model("m", latency=0.1, text="Four.")
    with ServeThread({"worker_agents": [worker(a, "m", name="A")]}, api_key="sk-page-key-0123456789") as served:
        page.open(served)
        assert page.visible("#key-form") and not page.visible("#app")
        page.wait(lambda: page.find("#fleet").text == "this server wants its API key", "the top bar still connects")
        page.find("#key").send_keys("wrong-key\n")
        page.wait(lambda: page.text("#key-error") == "That key was not accepted.", "a wrong key was not refused")
        page.find("#key").send_keys("sk-page-key-0123456789\n")
        page.wait(lambda: page.visible("#app"), "the right key was not taken")
        page.ask("2 + 2?")
        page.wait_until_done()
        assert page.text("#final-body") == "Four." and page.text("#final-source") .startswith("no reviewer")
        assert a.requests[0].authorization == ""  # serve's key is not the fleet's: never passed on
        page.driver.refresh()
        page.open(served)
        assert page.visible("#app") and not page.visible("#key-form")  # asked once (this tab keeps it)
        assert "sk-page-key" not in page.driver.page_source


def test_a_screenshot_of_a_finished_run(page, servers):
    """1280×800, saved as a test artifact (test-artifacts/ui-finished-run.png, or $PARALLAMA_TEST_ARTIFACTS)."""
    a, b, c = servers
    with ServeThread(guide_config(a, b, c, latency=0.5)) as served:
        page.open(served).ask("Why is the sky blue?")
        page.wait_until_done()
        time.sleep(0.3)  # the last poll of the servers' load
        folder = Path(os.environ.get("PARALLAMA_TEST_ARTIFACTS") or REPO / "test-artifacts")
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / "ui-finished-run.png"
        assert page.driver.save_screenshot(str(shot))
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == (1280, 800)
    print(f"screenshot: {shot}")


def test_a_vote_shows_its_tally_and_the_cut_workers_as_cut_not_failed(page):
    with FakeServer() as fake:
        fake.model("a", latency=0.2, text="The answer is 42.")
        fake.model("b", latency=0.3, text="42")
        fake.model("c", latency=8.0, tokens=40, text="Perhaps 41 " * 8)
        fake.model("rev", latency=0.1, text="42.")
        config = {"worker_agents": [worker(fake, m, name=m.upper()) for m in "abc"],
                  "reviewer_agent": worker(fake, "rev", name="Rev"), "servers": {fake.url: {"parallel": 4}}}
        with ServeThread(config) as served:
            page.open(served).ask("6 × 7?", strategy="vote")
            page.wait_until_done()
            assert page.badge("C") == "cut" and page.badge("A") == "done"
            assert "cut: 2 of 3 agreed" in page.text('.card[data-agent="C"] .error-line')
            assert page.all('.card.state-cut[data-agent="C"]') and not page.all('.card.state-failed')
            assert page.all('.tl-row[data-agent="C"] .tl-bar.cut')
            source = page.text("#final-source")
            assert source.startswith("the majority's answer (a vote) · partial: C cut")
            assert page.text("#final-body") == "The answer is 42."
            votes = page.text("#verdict")
            assert votes.lower().startswith("votes") and "42 2" in votes and "A, B" in votes
            assert page.errors() == []


LONG_LINE = "```\n" + "x = [" + ", ".join(str(n) for n in range(120)) + "]\n```\nThat is the list."
SCREENS = {"phone": (390, 844, True), "wide": (1280, 800, False)}


def set_screen(driver: Any, width: int, height: int, mobile: bool) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": mobile})


@pytest.fixture
def screen(chromium: Any) -> Any:
    """`screen("phone")` sizes the page as a 390×844 phone (mobile emulation: touch, the viewport tag honoured) or
    `screen("wide")` as 1280×800; the browser is put back at 1280×800 after the test."""
    yield lambda name: set_screen(chromium, *SCREENS[name])
    set_screen(chromium, 1280, 800, False)


def layout(page: Page) -> dict[str, Any]:
    """Where things are on screen: the page's width against the window's, and boxes of what a person needs."""
    return page.script("""
        const box = (id) => { const e = document.getElementById(id); if (!e) return null;
          const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
        const thread = document.getElementById('thread');
        return {scrollWidth: document.scrollingElement.scrollWidth, innerWidth: innerWidth, innerHeight: innerHeight,
                threadScroll: thread.scrollWidth, threadWidth: thread.clientWidth,
                send: box('send'), prompt: box('prompt'), final: box('final-body'), finalPanel: box('final'),
                work: box('work'), workOpen: document.getElementById('work').open,
                history: box('history-pane'),
                wide: [...document.querySelectorAll('#thread *')].filter((e) => {
                  const r = e.getBoundingClientRect(); return r.width > 0 && r.right > innerWidth + 1
                    && !e.closest('pre') && !e.closest('code'); }).map((e) => e.tagName + '.' + e.className)};
    """)


def on_screen(box: dict[str, float], shown: dict[str, Any]) -> bool:
    return box["left"] >= 0 and box["right"] <= shown["innerWidth"] and box["top"] >= 0 and \
        box["bottom"] <= shown["innerHeight"]


def five_workers(fake: FakeServer) -> dict[str, Any]:
    for i, model in enumerate(("llama3.1:8b-instruct-q4_K_M", "mistral-nemo:12b", "qwen2.5-coder:7b", "gemma2:9b",
                               "phi3.5:3.8b-mini-instruct")):
        fake.model(model, latency=0.3 + 0.1 * i, tokens=12, text=f"Answer {i}: blue light scatters more. " * 3)
    fake.model("rev", latency=0.3, tokens=12, text=REVIEWED)
    names = ["Worker A (Llama 3.1 8B)", "Worker B (Mistral Nemo)", "Worker C (Qwen 2.5 Coder)",
             "Worker D (Gemma 2 9B)", "Worker E (Phi 3.5)"]
    models = list(fake.models)[:5]
    return {"worker_agents": [worker(fake, m, name=n) for n, m in zip(names, models)],
            "reviewer_agent": worker(fake, "rev", name="Reviewer (Llama 3.1 70B)"),
            "servers": {fake.url: {"parallel": 3}}}


@pytest.mark.parametrize("size", ["phone", "wide"])
def test_the_page_fits_the_screen_and_a_finished_answer_is_in_view(page, screen, size):
    """On a phone and on a wide screen: nothing scrolls sideways (a long code line in an earlier turn scrolls in its
    own box), the prompt box and Send are on screen, a queued worker's name and its model are whole, and a
    finished run's final answer is in view with the workers folded beneath it; saved as a screenshot."""
    screen(size)
    with FakeServer() as fake:
        config = five_workers(fake)
        with ServeThread(config) as served:
            page.open(served)
            shown = layout(page)
            assert shown["scrollWidth"] <= shown["innerWidth"], shown
            assert on_screen(shown["send"], shown) and on_screen(shown["prompt"], shown), shown
            if size == "phone":  # the history is a drawer, out of sight until asked for
                assert shown["history"]["right"] <= 0
                page.find("#history-toggle").click()
                page.wait(lambda: layout(page)["history"]["left"] >= 0, "the drawer did not open")
                from selenium.webdriver.common.action_chains import ActionChains

                ActionChains(page.driver).move_to_element_with_offset(page.find("#scrim"), 180, 0).click().perform()
                page.wait(lambda: layout(page)["history"]["right"] <= 0, "the drawer did not close")
            # A first turn whose answer holds a long line of code: the next turn shows it in the thread above.
            fake.model("rev", latency=0.2, tokens=8, text=LONG_LINE)
            page.ask("Show me a list")
            page.wait_until_done()
            held = threading.Event()  # the reviewer runs, silent, until the test has looked at the running turn
            fake.model("rev", latency=1.2, tokens=25, text=REVIEWED, hold=held)
            try:
                page.ask("Why is the sky blue?")
                page.wait(lambda: page.script("return document.getElementById('work').open") and page.all(
                    ".card.state-running"), "the work is not open while it runs")
                shown = layout(page)
                assert shown["scrollWidth"] <= shown["innerWidth"], shown
                assert shown["threadScroll"] <= shown["threadWidth"], shown
                assert not shown["wide"], shown
            finally:
                held.set()
            page.wait(lambda: "Rayleigh" in page.script("return document.getElementById('final-body').textContent"),
                      "the run did not end")
            page.wait(lambda: page.script("return document.getElementById('send').textContent") == "Send", "no end")
            page.wait(lambda: not layout(page)["workOpen"], "the work did not fold when the run ended")
            shown = layout(page)
            assert shown["scrollWidth"] <= shown["innerWidth"] and shown["threadScroll"] <= shown["threadWidth"], shown
            assert not shown["wide"], shown
            assert on_screen(shown["send"], shown), shown
            # Done: the answer in view, above the workers, which are folded under their summary.
            assert not shown["workOpen"] and not any(c.is_displayed() for c in page.all(".card"))
            assert 0 <= shown["final"]["top"] < shown["innerHeight"] - 40, shown
            assert shown["finalPanel"]["top"] < shown["work"]["top"]
            summary = page.find("#work-summary").text
            assert summary.startswith("Worked for ") and "5 of 5 workers answered" in summary
            earlier = page.find("#conversation pre")  # the long line scrolls inside its own box
            assert page.script("const e = arguments[0]; return e.scrollWidth > e.clientWidth", earlier)
            # Re-opened: the cards, whole names and models (not "W…", not "m.").
            page.find("#work-summary").click()
            page.wait(lambda: page.all(".card")[0].is_displayed(), "the work did not open again")
            for card in page.all('.card[data-stage="workers"]'):
                name = card.find_element("css selector", "h3")
                model = card.find_element("css selector", ".model")
                assert page.script("const e = arguments[0]; return e.scrollWidth <= e.clientWidth", name), name.text
                assert page.script("const e = arguments[0]; return e.scrollWidth <= e.clientWidth + 1", model), model.text
            folder = Path(os.environ.get("PARALLAMA_TEST_ARTIFACTS") or REPO / "test-artifacts")
            folder.mkdir(parents=True, exist_ok=True)
            page.script("document.querySelector('.timeline-panel').scrollIntoView({block: 'end'})")
            time.sleep(0.2)
            page.driver.save_screenshot(str(folder / f"ui-{size}-work.png"))  # the timeline, by eye
            page.find("#work-summary").click()
            page.script("document.getElementById('thread').scrollTop = 0;"
                        "document.getElementById('run').scrollIntoView({block: 'start'})")
            time.sleep(0.2)
            shot = folder / f"ui-{size}.png"
            assert page.driver.save_screenshot(str(shot))
            assert page.errors() == []
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == SCREENS[size][:2]


def test_a_queued_worker_keeps_its_name_and_a_fix_shows_its_command_as_code(page, screen, servers):
    screen("phone")
    a, b, c = servers
    held = threading.Event()  # A holds the shared slot, half-way through its answer, until the test has looked
    a.model("m", latency=1.5, tokens=40, text="First line of a long answer.\n\n" + "And another paragraph.\n\n" * 20,
            hold=held, hold_after=5)
    a.model("n", latency=0.2, text="Second.")
    config = {"worker_agents": [worker(a, "m", name="Worker A (Llama 3 8B)"),
                                worker(a, "n", name="Worker B (Llama 3 8B)"),
                                worker(b, "missing-model", name="Worker C (Mistral)")]}
    with ServeThread(config) as served:
        try:
            page.open(served).ask("2 + 2?")
            page.wait(lambda: page.badge("Worker B (Llama 3 8B)").startswith("queued on"), "B was not queued")
            name = page.find('.card[data-agent="Worker B (Llama 3 8B)"] h3')
            assert name.text == "Worker B (Llama 3 8B)"
            assert page.script("const e = arguments[0]; return e.scrollWidth <= e.clientWidth", name)
            folder = Path(os.environ.get("PARALLAMA_TEST_ARTIFACTS") or REPO / "test-artifacts")
            folder.mkdir(parents=True, exist_ok=True)
            page.driver.save_screenshot(str(folder / "ui-phone-running.png"))
        finally:
            held.set()
        page.wait_until_done()
        body = page.find('.card[data-agent="Worker A (Llama 3 8B)"] .body')
        assert page.script("const e = arguments[0]; return e.scrollHeight > e.clientHeight && e.scrollTop === 0", body)
        fix = page.find('.card[data-agent="Worker C (Mistral)"] .error-line .fix')
        assert "`" not in fix.text
        code = fix.find_element("css selector", "code")
        assert code.text.endswith("ollama pull missing-model") and "\n" not in code.text
        shown = layout(page)
        assert shown["scrollWidth"] <= shown["innerWidth"], shown


def test_a_judge_whose_scores_cannot_be_read_is_not_shown_as_done(page, servers):
    a, b, c = servers
    a.model("m", latency=0.1, text="Four.")
    b.model("m", latency=0.1, text="4")
    c.model("rev", latency=0.1, text="Both answers look fine to me.")  # no scores, twice
    config = {"reviewer_agent": worker(c, "rev", name="Rev"),
              "worker_agents": [worker(a, "m", name="A"), worker(b, "m", name="B")]}
    with ServeThread(config) as served:
        page.open(served).ask("2 + 2?", strategy="judge")
        page.wait_until_done()
        badges = [e.text for e in page.all('.card[data-stage="review"] .badge')]
        assert badges == ["unusable", "unusable"]
        assert not page.all('.card[data-stage="review"].state-done')
        assert "unreadable answer" in page.text('.card[data-stage="review"].state-unusable:last-child .error-line')
        assert page.text("#final-source").startswith("A's answer (the reviewer failed)") or \
            page.text("#final-source").startswith("B's answer (the reviewer failed)")
        assert "unusable" in page.find("#work-summary").text
        assert page.errors() == []


def test_on_a_phone_the_top_bar_keeps_the_servers_chips_on_one_line(page, screen):
    """Four servers on a 390×844 phone: their chips share one line (it scrolls sideways inside the bar), so the
    fixed top bar takes little of the screen (it took 160–189 px with one chip a line)."""
    screen("phone")
    with FakeServer() as a, FakeServer() as b, FakeServer() as c, FakeServer() as d:
        for fake in (a, b, c, d):
            fake.model("m", latency=0.05)
        config = {"worker_agents": [worker(fake, "m", name=f"Worker {n}") for fake, n in zip((a, b, c), "ABC")],
                  "reviewer_agent": worker(d, "m", name="Reviewer")}
        with ServeThread(config) as served:
            page.open(served)
            page.wait(lambda: len(page.all(".server")) == 4, "the servers' chips did not come")
            chips = page.script("return [...document.querySelectorAll('.server')].map(e => e.getBoundingClientRect().top)")
            bar = page.script("return document.querySelector('.top').getBoundingClientRect().height")
            assert len(set(round(top) for top in chips)) == 1, chips  # one line
            assert bar <= 130, bar
            assert page.script("return document.documentElement.scrollWidth") <= 390
