"""`parallama pull`: Ollama's `/api/pull` stream shown as a progress bar."""

from __future__ import annotations

from ..errors import BackendError


async def pull_stream(url: str, model: str, on_status) -> None:
    """POST /api/pull and call `on_status(status, completed, total)` per line; raise on an error line."""
    import aiohttp

    from ..backends.chunks import read_json
    from ..backends.transport import READ_BUFSIZE, TransportErrors
    from ..urls import public_url

    endpoint = url.rstrip("/") + "/api/pull"
    shown = public_url(endpoint)  # a password in --url is sent, never shown
    with TransportErrors(shown, unreachable_hint="start one with `parallama up --engine ollama`"):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
            async with session.post(endpoint, json={"model": model, "stream": True},
                                    read_bufsize=READ_BUFSIZE) as response:
                if response.status >= 400:
                    body = (await response.text()).strip()
                    raise BackendError(f"HTTP {response.status}: {body[:200]}", url=shown)
                async for line in response.content:
                    if not line.strip():
                        continue
                    try:
                        item = read_json(line)
                    except ValueError as exc:
                        raise BackendError(f"malformed line: {line[:80]!r}", url=shown) from exc
                    if not isinstance(item, dict):
                        raise BackendError(f"malformed line: {line[:80]!r}", url=shown)
                    if "error" in item:
                        raise BackendError(f"pull failed: {item['error']}", url=shown)
                    on_status(item.get("status", ""), item.get("completed"), item.get("total"))
