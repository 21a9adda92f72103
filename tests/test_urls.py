"""The URL rules, each defined once in `parallama.urls`: loopback, this machine, servers, public form, Basic auth."""

from __future__ import annotations

import base64

import pytest

from parallama.urls import basic_auth, credentials, is_local, is_loopback, is_this_machine, public_url, server_of


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "127.255.255.254", "::1",
                                  "[::1]"])
def test_loopback_is_localhost_127_slash_8_and_ipv6_one(host):
    assert is_loopback(host) and is_this_machine(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", "localhost.example",
                                  "128.0.0.1", ""])
def test_anything_else_is_not_loopback(host):
    assert not is_loopback(host)


def test_this_machine_is_loopback_or_the_unspecified_address():
    assert is_this_machine("0.0.0.0") and is_this_machine("::") and is_this_machine("[::]")
    assert not is_this_machine("10.0.0.1") and not is_this_machine("example.com")
    assert is_local("http://127.0.0.2:11434") and is_local("http://0.0.0.0:11434") and not is_local("http://gpu:1")


def test_every_name_of_this_machine_is_one_server():
    names = ["http://localhost:11434", "http://127.0.0.1:11434/api/chat", "http://[::1]:11434", "http://0.0.0.0:11434",
             "http://127.0.0.2:11434/v1"]
    assert {server_of(url) for url in names} == {"http://localhost:11434"}
    assert server_of("https://[fd00::1]/v1") == "https://[fd00::1]:443"


def test_a_url_password_is_public_nowhere_and_sent_as_basic_auth():
    url = "http://me:p%40ss@gpu:8000/v1"
    assert public_url(url) == "http://gpu:8000/v1"
    assert credentials(url) == ("me", "p@ss") and credentials("http://gpu:8000/v1") is None
    assert basic_auth("me", "p@ss") == "Basic " + base64.b64encode(b"me:p@ss").decode()
