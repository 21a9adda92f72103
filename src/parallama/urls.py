"""Every rule about URLs and hosts, in one place: what makes an agent's `api_url` well formed (which protocol its
path names is each backend's to say), the server it belongs to, its public form (no `user:password@`), the Basic auth a URL carries, and which hosts are this machine."""

from __future__ import annotations

import base64
import ipaddress
from urllib.parse import SplitResult, unquote, urlsplit

Protocol = str
"The name of a registered backend (`parallama.backends`): `ollama`, `openai`."


# ---------------------------------------------------------------- which hosts are this machine


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address; IPv6 with or without brackets) is loopback — `localhost`, 127.0.0.0/8 or
    `::1` — so that only this machine reaches it: binding there exposes nothing."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_this_machine(host: str) -> bool:
    """Whether connecting to `host` reaches this machine: loopback, or the unspecified address (`0.0.0.0`, `::`),
    which a connection takes for this machine."""
    if is_loopback(host):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def is_ip_address(host: str) -> bool:
    """Whether `host` is an IP address (IPv6 with or without brackets), not a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_local(url: str) -> bool:
    """Whether the URL's host is this machine."""
    return is_this_machine(urlsplit(url).hostname or "")


# ---------------------------------------------------------------- servers and ports


def port_of(url: str) -> int:
    """The URL's port, or its scheme's default when it names none."""
    parts = urlsplit(url)
    return parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)


def http_url(host: str, port: int) -> str:
    """`http://host:port`, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def server_of(url: str) -> str:
    """The server an URL belongs to, as `scheme://host:port`; every name of this machine counts as `localhost`."""
    parts = urlsplit(url.strip())
    _check_userinfo(parts, public_url(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{public_url(url)!r} is not a server URL like http://localhost:11434")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # the cause quotes what stands after the last `:`, which may be part of a password
        raise ValueError(f"{public_url(url)!r} has a bad port") from None
    host = parts.hostname.lower()
    if is_this_machine(host):
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


# ---------------------------------------------------------------- an agent's api_url


def split_api_url(url: str) -> tuple[str, str, str]:
    """(base `scheme://host:port` without user:password, path without its trailing `/`, path as written) of an
    agent's api_url; ValueError saying why when it is not a URL a server can be reached at."""
    parts = urlsplit(url.strip())
    shown = public_url(url)
    _check_userinfo(parts, shown)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host")
    try:
        port = parts.port
    except ValueError:  # the cause quotes what stands after the last `:`, which may be part of a password
        raise ValueError(f"{shown!r} has a bad port") from None
    if port == 0:
        raise ValueError(f"{shown!r} has port 0, which no server listens on (Ollama's is 11434)")
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}", parts.path.rstrip("/"), parts.path


def _check_userinfo(parts: SplitResult, shown: str) -> None:
    """A `@` past the host part is a password holding `/`, `?` or `#`, which cut the host part short."""
    if "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(f"{shown!r}: a user:password in a URL must write / ? # @ as %2F %3F %23 %40 "
                         "(the password is not shown)")


# ---------------------------------------------------------------- a URL's user:password


def public_url(url: str) -> str:
    """`url` without its `user:password@`, for showing and storing.

    A password holding `/`, `?` or `#` (not percent-encoded) ends the URL's host part early, and its rest lands in
    the path, query or fragment: any `@` after `://` is then taken as the end of a user:password, and everything up
    to the last one is left out. A URL too broken to parse is shown the same way."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if "@" in rest:
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is not None and "@" not in parts.path + parts.query + parts.fragment:
            url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        else:
            url = f"{scheme}://{rest.rpartition('@')[2]}"
    return _without_query_credentials(url)


_QUERY_CREDENTIALS = ("password", "username")


def _without_query_credentials(url: str) -> str:
    """`url` without `?password=`/`?username=` (redis-py's form, the documented one for `unix://` sockets)."""
    base, sep, query = url.partition("?")
    if not sep or not any(name in query.lower() for name in _QUERY_CREDENTIALS):
        return url
    query, hash_, fragment = query.partition("#")
    kept = [item for item in query.split("&")
            if unquote(item.partition("=")[0]).strip().lower() not in _QUERY_CREDENTIALS]
    return base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment


def credentials(url: str) -> tuple[str, str] | None:
    """(user, password) written into the URL, percent-decoded as a browser would send them."""
    parts = urlsplit(url.strip())
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def basic_auth(user: str, password: str) -> str:
    """The `Authorization` header's value for HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
