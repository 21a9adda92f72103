"""Hostile round 3 on the files parallama writes (`up --write-config`, `recommend --write`, `compose -o`): a FIFO or
a device is refused at once (never a hang), an existing file or symlink is kept unless `--force`, and a write is
whole or nothing (a temporary file renamed into place). And agents' slugs: a name that is a slug keeps it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import invoke

WRITERS = {
    "recommend": ["recommend", "--ram", "16", "--vram", "0", "--write"],
    "compose": ["compose", "-n", "1", "--output"],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_fifo_is_refused_at_once_not_written_for_ever(tmp_path, command):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    run = subprocess.run([sys.executable, "-m", "parallama", *WRITERS[command], str(fifo)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: {WRITERS[command][-1]} {fifo}: not a regular file (a " \
                                                  "pipe, device or folder); name a file"


def test_up_refuses_a_fifo_before_starting_anything(tmp_path):
    fifo = tmp_path / "fleet.fifo"
    os.mkfifo(fifo)
    run = subprocess.run([sys.executable, "-m", "parallama", "up", "--engine", "ollama", "--model", "m",
                          "--write-config", str(fifo)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "not a regular file" in run.stderr, run.stderr
    assert "ready on" not in run.stderr


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_an_existing_file_is_kept_unless_forced(tmp_path, command):
    mine = tmp_path / "mine.json"
    mine.write_text("my own config, hand-written\n")
    link = tmp_path / "link.json"
    link.symlink_to(mine)
    for target in (mine, link):
        refused = invoke(*WRITERS[command], str(target))
        assert refused.exit_code == 2
        assert refused.stderr.strip() == f"error: {WRITERS[command][-1]} {target}: the file exists; pass --force " \
                                         "to replace it"
        assert refused.stdout == ""  # refused before anything was said
    assert mine.read_text() == "my own config, hand-written\n"
    forced = invoke(*WRITERS[command], str(link), "--force")
    assert forced.exit_code == 0, forced.stderr
    assert mine.read_text() == "my own config, hand-written\n"  # the link was replaced, not what it points to
    assert not link.is_symlink() and link.read_text().strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "mine.json"]  # no temporary file left


def test_up_refuses_an_existing_config_before_starting_anything(tmp_path):
    mine = tmp_path / "fleet.json"
    mine.write_text("{}\n")
    result = invoke("up", "--engine", "ollama", "--model", "m", "--write-config", str(mine))
    assert result.exit_code == 2 and "the file exists; pass --force" in result.stderr
    assert mine.read_text() == "{}\n"


def test_a_write_is_whole_or_nothing(tmp_path):
    """The text goes to a temporary file in the same folder, renamed over the target: a reader (or a crash) never
    sees half of it."""
    import threading

    target = tmp_path / "rec.json"
    target.write_text(json.dumps({"old": True}))
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(target.read_text())
            except FileNotFoundError:
                seen.append("<missing>")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            assert invoke("recommend", "--ram", "16", "--vram", "0", "--write", str(target), "--force").exit_code == 0
    finally:
        stop.set()
        reader.join()
    for text in seen:
        json.loads(text)  # every read is a whole file: the old one or the new one


# ---------------------------------------------------------------- slugs (item 21)


def test_a_name_that_is_a_slug_keeps_it_and_generated_suffixes_avoid_literal_slugs():
    from parallama.config import fleet_from_dict
    from parallama.serve.models import agent_slugs

    names = ["Worker A", "worker-a", "worker-a-2", "Worker A!", "worker-a-3"]
    fleet = fleet_from_dict({"worker_agents": [
        {"api_url": "http://127.0.0.1:9/api/chat", "model": "m", "name": name} for name in names]})
    slugs = {slug: agent.name for slug, agent in agent_slugs(fleet.agents).items()}
    assert slugs["worker-a"] == "worker-a" and slugs["worker-a-2"] == "worker-a-2"
    assert slugs["worker-a-3"] == "worker-a-3"
    assert sorted(slugs.values()) == sorted(names) and len(slugs) == len(names)
    assert slugs["worker-a-4"] == "Worker A" and slugs["worker-a-5"] == "Worker A!"
    assert list(slugs.values()) == names  # listed in config order
