"""Hostile round 3 on the shared slots: a real `redis-server` flushed, tampered with, locked down by ACLs and brought
back; local slot files deleted or unusable; malformed store URLs. Every count is the fake server's strict one (a
request counts out only after its last line), across real `parallama` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RedisServer, invoke, worker, write_config
from fakes import FakeServer, free_port
from test_shared_slots import HANG_S, one_worker, parallama, start_serve, stop, wait_for

SECRET = "hunter2secret"


def two_workers_on_two_slots(tmp_path: Path, fake: FakeServer, name: str, timeout: float = 60) -> Path:
    return write_config(tmp_path / name, {
        "worker_agents": [worker(fake, "w", name="A", timeout=timeout), worker(fake, "w", name="B", timeout=timeout)],
        "servers": {fake.url: {"parallel": 2}}})


def run_two(config: str, store: str) -> subprocess.Popen[str]:
    return parallama("run", "q", "-c", config, "--no-review", "--json", "--no-history",
                     env={"PARALLAMA_SLOT_STORE": store})


def redis_client(server: RedisServer):
    import redis

    return redis.Redis(port=server.port)


# ---------------------------------------------------------------- the store's setting


@pytest.mark.parametrize("url", [f"redis://u:{SECRET}/x@cache/0", "redis://cache:notaport/0",
                                 "redis://cache:6379/0?socket_timeout=abc", f"redis://u:{SECRET}@/0"])
def test_a_malformed_store_url_is_one_line_and_exit_2_without_the_password(tmp_path, monkeypatch, url):
    with FakeServer() as fake:
        fake.model("w", text="x")
        one_worker(tmp_path, fake, timeout=5, slot_store=url)
        in_config = invoke("run", "q", "-c", "c.json", "--no-history")
        one_worker(tmp_path, fake, timeout=5)
        monkeypatch.setenv("PARALLAMA_SLOT_STORE", url)
        in_env = invoke("run", "q", "-c", "c.json", "--no-history")
        listed = invoke("plan", "-c", "c.json")  # read with the config: any command that reads it says so
    for result, where in ((in_config, "slot_store"), (in_env, "PARALLAMA_SLOT_STORE"), (listed, "PARALLAMA_SLOT_STORE")):
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and where in lines[0] and "Traceback" not in result.output, result.output
        assert SECRET not in result.output and ("cache" in lines[0]) == ("cache" in url)
    assert not fake.requests


def test_a_password_in_the_query_is_never_shown(tmp_path):
    from parallama.urls import public_url

    assert public_url(f"unix:///run/redis.sock?db=0&password={SECRET}") == "unix:///run/redis.sock?db=0"
    assert public_url(f"redis://127.0.0.1:6379/0?username=bob&password={SECRET}") == "redis://127.0.0.1:6379/0"
    with FakeServer() as fake:
        fake.model("w", text="x")
        one_worker(tmp_path, fake, timeout=5)
        url = f"redis://127.0.0.1:{free_port()}/0?password={SECRET}"
        run = parallama("run", "q", "-c", "c.json", env={"PARALLAMA_SLOT_STORE": url})
        _, err = run.communicate(timeout=60)
    assert run.returncode == 2 and len(err.strip().splitlines()) == 1 and "Redis does not answer" in err
    assert SECRET not in err and "password" not in err


async def test_every_store_scheme_opens(tmp_path, redis_server, monkeypatch):
    """The contract: each entry of the table names a store that its check takes and that opens."""
    import shutil

    from parallama.slots import STORES, check_setting, close_store, open_store

    socket_path = tmp_path / "redis.sock"
    unix = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--save", "",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls = tls_redis(tmp_path) if shutil.which("openssl") else None
    try:
        wait_for(lambda: socket_path.exists(), "the unix socket")
        settings = {"local": "local", "none": "none", "redis": redis_server.url,
                    "unix": f"unix://{socket_path}?db=0"}
        if tls is not None:
            settings["rediss"] = f"rediss://127.0.0.1:{tls[1]}/0?ssl_cert_reqs=none"
        assert set(settings) | {"rediss"} == set(STORES)
        for name, setting in settings.items():
            assert check_setting(setting) == setting
            monkeypatch.setenv("PARALLAMA_SLOT_STORE", setting)
            store = await open_store(None)
            if name == "none":
                assert store is None
                continue
            assert store is not None and store.kind == ("local" if name == "local" else "redis"), name
            slots = store.slots_for("http://gpu1:11434", 1)
            await slots.acquire()
            assert slots.counts()[0] == 1
            slots.release()
            await close_store(store)
    finally:
        unix.kill()
        if tls is not None:
            tls[0].kill()


def tls_redis(tmp_path: Path):
    """A redis-server speaking TLS only, with a throwaway self-signed certificate (None if this build has no TLS)."""
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                                "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients",
                                "no", "--save", "", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None


# ---------------------------------------------------------------- Redis faults


def test_a_flushed_redis_never_lets_a_two_slot_server_run_four(tmp_path, redis_server):
    """FLUSHALL while two requests run and two more (another process's) wait: the leases come back before the
    waiting ones are let through."""
    with FakeServer(slots=None, strict=True) as fake:
        fake.model("w", latency=60.0, text="answered")
        two_workers_on_two_slots(tmp_path, fake, "c.json", timeout=120)
        first = run_two("c.json", redis_server.url)
        wait_for(lambda: len(fake.requests) == 2, "the first run's two requests", 60)
        second = run_two("c.json", redis_server.url)
        client = redis_client(redis_server)
        wait_for(lambda: any(client.zcard(k) == 2 for k in client.keys("parallama:slots:*:queue")),
                 "the second run's two tickets", 60)
        fake.model("w", latency=4.0, text="answered")  # the first run's requests hold on; the next ones are quick
        client.flushall()
        outs = [p.communicate(timeout=90) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert fake.max_in_flight == 2
    assert len(fake.requests) == 4


def test_a_redis_stalled_longer_than_a_lease_never_lets_a_two_slot_server_run_four(tmp_path, redis_server):
    """Redis stops answering for 11 s (longer than a lease, shorter than the old 13 s socket timeout): each process
    says Redis is lost within seconds and goes on with this machine's slots, which its requests hold already."""
    with FakeServer(slots=None, strict=True) as fake:
        fake.model("w", latency=30.0, text="answered")
        two_workers_on_two_slots(tmp_path, fake, "c.json", timeout=120)
        first = run_two("c.json", redis_server.url)
        wait_for(lambda: len(fake.requests) == 2, "the first run's two requests", 60)
        second = run_two("c.json", redis_server.url)
        client = redis_client(redis_server)
        wait_for(lambda: any(client.zcard(k) == 2 for k in client.keys("parallama:slots:*:queue")),
                 "the second run's two tickets", 60)
        client.close()
        fake.model("w", latency=2.0, text="answered")
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(11)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert all("lost" in err for _, err in outs), outs
    assert fake.max_in_flight == 2 and len(fake.requests) == 4


def test_a_lease_that_never_expires_is_purged(tmp_path, redis_server):
    from parallama.slots.redis_store import PREFIX, server_key
    from parallama.urls import server_of

    with FakeServer(slots=1, strict=True) as fake:
        fake.model("w", latency=0.1, text="answered")
        one_worker(tmp_path, fake, timeout=5, servers={fake.url: {"parallel": 1}})
        client = redis_client(redis_server)
        held = f"{PREFIX}{server_key(server_of(fake.url))}:held"
        client.zadd(held, {"junk": float("inf"), "far": 1e15})
        run = parallama("run", "q", "-c", "c.json", "--no-review", "--json", "--no-history",
                        env={"PARALLAMA_SLOT_STORE": redis_server.url})
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["workers"][0]["status"] == "ok"
    assert client.zscore(held, "junk") is None


@pytest.mark.parametrize("rules, right", [
    (["-@scripting"], "scripts"), (["resetchannels"], "channels"), (["resetchannels", "&other:*"], "channels")])
def test_a_redis_user_without_a_right_is_refused_at_start(tmp_path, redis_server, rules, right):
    client = redis_client(redis_server)
    client.execute_command("ACL", "SETUSER", "limited", "on", f">{SECRET}", "~*", "&*", "+@all", *rules)
    with FakeServer() as fake:
        fake.model("w", text="x")
        one_worker(tmp_path, fake, timeout=5)
        url = f"redis://limited:{SECRET}@127.0.0.1:{redis_server.port}/0"
        run = parallama("run", "q", "-c", "c.json", "--no-history", env={"PARALLAMA_SLOT_STORE": url})
        _, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Redis refuses" in lines[0] and right in lines[0], err
    assert SECRET not in err and not fake.requests


def test_a_process_that_lost_redis_and_one_started_after_it_came_back_share_the_slots(tmp_path, redis_server):
    """Redis goes away (a serve replica falls back to this machine's slots) and comes back (a new replica uses
    it): on this machine they still never run more than the server's slots between them."""
    with FakeServer(slots=None, strict=True) as fake:
        fake.model("w", latency=2.0, text="answered")
        write_config(tmp_path / "c.json", {"worker_agents": [worker(fake, "w", name="W", timeout=60)],
                                           "reviewer_agent": worker(fake, "w", name="R", timeout=60),
                                           "servers": {fake.url: {"parallel": 2}}})
        env = {"PARALLAMA_SLOT_STORE": redis_server.url}
        a, url_a = start_serve("-c", "c.json", env=env)
        try:
            port = redis_server.port
            redis_server.stop()
            from test_shared_slots_redis import ask_in_threads

            # A's first request finds Redis gone: A says so and goes on with this machine's slots.
            warm: list = []
            for thread in ask_in_threads(url_a, 1, warm, []):
                thread.join(60)
            back = RedisServer(tmp_path / "redis-back", port=port)  # the same address, empty
            b, url_b = start_serve("-c", "c.json", env=env)
            try:
                fake.max_in_flight = 0
                replies: list = []
                errors: list = []
                threads = ask_in_threads(url_a, 3, replies, errors) + ask_in_threads(url_b, 3, replies, errors)
                for thread in threads:
                    thread.join(90)
            finally:
                stop(b)
                back.stop()
        finally:
            stop(a)
    assert len(warm) == 1 and not errors and len(replies) == 6
    assert fake.max_in_flight == 2


def test_a_read_only_home_with_redis_disables_only_the_fallback(tmp_path, redis_server):
    with FakeServer() as fake:
        fake.model("w", text="answered")
        one_worker(tmp_path, fake, timeout=5)
        (tmp_path / "blocked").write_text("a file where the home's folders would go")
        home = tmp_path / "blocked" / "home"
        run = parallama("run", "q", "-c", "c.json", "--no-review", "--json", "--no-history",
                        env={"PARALLAMA_SLOT_STORE": redis_server.url, "PARALLAMA_HOME": str(home)})
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["workers"][0]["status"] == "ok"
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "slots" in warnings[0] and "Redis" in warnings[0]


# ---------------------------------------------------------------- this machine's slot files


def test_slot_files_deleted_under_a_holder_are_opened_again(tmp_path):
    import shutil

    from parallama.paths import state_dir

    with FakeServer(slots=None, strict=True) as fake:
        fake.model("w", latency=3.0, text="answered")
        one_worker(tmp_path, fake, timeout=30)
        first = parallama("run", "q", "-c", "c.json", "--no-review", "--json", "--no-history")
        wait_for(lambda: len(fake.requests) == 1, "the first run's request")
        shutil.rmtree(state_dir() / "slots")
        wait_for(lambda: any((state_dir() / "slots").glob("*/slot.0")), "the holder to open its files again", 10)
        second = parallama("run", "q", "-c", "c.json", "--no-review", "--json", "--no-history")
        outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert fake.max_in_flight == 1 and len(fake.requests) == 2


@pytest.mark.parametrize("damage", ["door is a folder", "slot.0 is a folder", "slot.0 loops", "server is a file"])
def test_an_unusable_slot_file_is_one_line_naming_it(tmp_path, damage):
    from parallama.paths import state_dir
    from parallama.slots.local import server_dir_name
    from parallama.urls import server_of

    with FakeServer() as fake:
        fake.model("w", text="x")
        one_worker(tmp_path, fake, timeout=5)
        folder = state_dir() / "slots" / server_dir_name(server_of(fake.url))
        folder.parent.mkdir(parents=True, exist_ok=True)
        if damage == "server is a file":
            folder.write_text("")
            named = folder
        else:
            folder.mkdir()
            named = folder / damage.split()[0]
            if damage.endswith("loops"):
                named.symlink_to(named)
            else:
                named.mkdir()
        run = parallama("run", "q", "-c", "c.json", "--no-history")
        _, err = run.communicate(timeout=60)
        serve = subprocess.run([sys.executable, "-m", "parallama", "serve", "--port", "0", "--no-history", "-c", "c.json"],
                               capture_output=True, text=True, timeout=60, env=os.environ)
    for code, text in ((run.returncode, err), (serve.returncode, serve.stderr)):
        assert code == 2, text
        lines = text.strip().splitlines()
        assert len(lines) == 1 and str(named) in lines[0] and "Traceback" not in text, text
    assert not fake.requests


def test_sigterm_while_waiting_for_a_redis_slot_ends_cleanly(tmp_path, redis_server):
    """SIGTERM to a `run` waiting for a Redis slot once raised KeyboardInterrupt into whatever task ran: in 3 tries
    of 9, pages of traceback and a ticket left queued for 10 s. Here each waiting run is kept busy (its metrics
    scraped without pause, so the signal lands inside a task, not only in the idle loop) and stopped at another
    moment of its wait: every time exit 130, `interrupted` and nothing else, its ticket out of the queue by the time
    it has ended."""
    import threading
    import urllib.request

    tries = 6
    with FakeServer(slots=None, strict=True) as fake:
        fake.model("w", latency=600, text="never")
        one_worker(tmp_path, fake, timeout=900, servers={fake.url: {"parallel": 1}})
        env = {"PARALLAMA_SLOT_STORE": redis_server.url}
        client = redis_client(redis_server)
        client.config_set("notify-keyspace-events", "Kz")  # a message as a ticket is queued: no polling for it
        queue_events = client.pubsub()
        queue_events.psubscribe("__keyspace@0__:parallama:slots:*:queue")

        def queued() -> int:
            return sum(client.zcard(k) for k in client.keys("parallama:slots:*:queue"))

        def ticket_queued(waiter: subprocess.Popen[str]) -> None:
            deadline = time.monotonic() + 120
            while True:
                message = queue_events.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None and message["data"] == b"zadd":
                    return
                assert waiter.poll() is None and time.monotonic() < deadline, "the waiter never queued a ticket"

        def scrape(url: str, scraped: threading.Event, done: threading.Event) -> None:
            while not done.is_set():
                try:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        reply.read()
                    scraped.set()
                except OSError:
                    time.sleep(0.01)  # not up yet, or gone

        holder = parallama("run", "q", "-c", "c.json", "--no-review", "--no-history", env=env)
        ended: list[tuple[int | None, str, int]] = []
        try:
            wait_for(lambda: len(fake.requests) == 1, "the holder's request")
            for attempt in range(tries):
                while queue_events.get_message(timeout=0):  # what the last try left
                    pass
                port = free_port()
                waiter = parallama("run", "q", "-c", "c.json", "--no-review", "--no-history", "--metrics-port",
                                   str(port), env={**env, "PYTHONFAULTHANDLER": "1"})  # SIGABRT: its stacks
                scraped, done = threading.Event(), threading.Event()
                scraper = threading.Thread(target=scrape, args=(f"http://127.0.0.1:{port}/metrics", scraped, done))
                scraper.start()
                try:
                    ticket_queued(waiter)
                    assert scraped.wait(120), "its metrics never answered"
                    # Then at another point of its poll period (POLL_S = 0.5 s) each time.
                    time.sleep(attempt * 0.11)
                    waiter.send_signal(signal.SIGTERM)
                    try:
                        _, err = waiter.communicate(timeout=HANG_S)
                    except subprocess.TimeoutExpired as hung:
                        waiter.send_signal(signal.SIGABRT)
                        stacks = waiter.communicate()[1]
                        raise AssertionError(f"still running {HANG_S:g} s after SIGTERM:\n{stacks}") from hung
                finally:
                    done.set()
                    scraper.join(30)
                    waiter.kill()
                ended.append((waiter.returncode, err, queued()))
        finally:
            queue_events.close()
            holder.kill()
            holder.communicate(timeout=30)
    assert len(fake.requests) == 1  # no waiter ever sent a request
    assert len(ended) == tries
    for code, err, left in ended:
        said = [line for line in err.strip().splitlines() if not line.startswith("metrics: http://127.0.0.1:")]
        assert (code, said) == (130, ["interrupted"]), err
        assert left == 0, err  # its ticket left the queue as it ended
