"""`parallama pull`: Ollama's `/api/pull` stream shown as a progress bar."""

from __future__ import annotations

import asyncio
import json

from ..errors import BackendError, Unreachable


async def pull_stream(url: str, model: str, on_status) -> None:
    """POST /api/pull and call `on_status(status, completed, total)` per line; raise on an error line."""
    import aiohttp

    from ..redact import public_url

    endpoint = url.rstrip("/") + "/api/pull"
    shown = public_url(endpoint)  # a password in --url is sent, never shown
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as session:
            async with session.post(endpoint, json={"model": model, "stream": True}) as response:
                if response.status >= 400:
                    body = (await response.text()).strip()
                    raise BackendError(f"HTTP {response.status}: {body[:200]}", url=shown)
                async for line in response.content:
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        raise BackendError(f"malformed line: {line[:80]!r}", url=shown) from None
                    if "error" in item:
                        raise BackendError(f"pull failed: {item['error']}", url=shown)
                    on_status(item.get("status", ""), item.get("completed"), item.get("total"))
    except aiohttp.ClientConnectorError as exc:
        raise Unreachable(f"nothing listens on {exc.host}:{exc.port} — start one with `parallama up --engine ollama`",
                          url=shown) from exc
