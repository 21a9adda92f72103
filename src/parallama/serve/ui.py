"""The web page at `/ui/`: its files, shipped inside the package and served with a Content-Security-Policy that
lets no inline script run, and the endpoints under `/ui/api/` it talks to — the fleet, the servers' load, the
history, and a run as a stream of server-sent events (`POST /ui/api/runs`; closing the stream cancels the run).

The page's files hold no data and are served without the API key (the page asks for it); every `/ui/api/`
request needs the key when `--api-key-env` is set, and is refused when another site's page sends it."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine
from urllib.parse import urlsplit

from aiohttp import web

from .. import __version__
from ..errors import SearchError
from ..stages import reviewing
from .conversation import split
from .errors import ApiError
from .feed import Feed, write_stream
from .origins import local_name
from .service import SERVICE, Service
from .ui_view import RunView, View, fleet_view, replay
from .wire import PageRunRequest, parse

if TYPE_CHECKING:
    from pathlib import Path

    from ..backends import Message
    from ..events import Event, EventSink
    from ..redact import Redactor
    from ..result import RunResult


PAGE_FILES = {"index.html": "text/html", "app.css": "text/css", "favicon.svg": "image/svg+xml",
              **{f"{module}.js": "text/javascript" for module in ("app", "run", "draw", "dom", "format")}}
"The page's files; its script is ES modules (`app.js` imports the rest), loaded as `script-src 'self'` allows."
PUBLIC_PATHS = frozenset({"/ui", "/ui/", *(f"/ui/{name}" for name in PAGE_FILES)})
"The page's own files: no API key needed (they hold no data; the page asks for the key and sends it itself)."
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"No inline script or style, nothing from another origin: an answer that slipped markup through could run nothing."
LOAD_PATH = "/ui/api/load"
"Polled by every open page: left out of the access log."
HISTORY_LIMIT = 200
PROMPT_SHOWN = 500
"Characters of each prompt the history list shows."
SSE = "text/event-stream"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STOP_TOKEN_HEADER = "X-Parallama-Stop-Token"
"Sent with a page run's stream, and asked of its Stop: only the page that started a run can stop it (run ids are "
"no secret: /api/ps lists them)."
STOP_TOKENS: web.AppKey[dict[str, str]] = web.AppKey("stop_tokens", dict)


def add_routes(app: web.Application) -> None:
    app[STOP_TOKENS] = {}
    app.router.add_get("/ui", to_page)
    app.router.add_get("/ui/", page_file)
    app.router.add_get("/ui/api/fleet", fleet)
    app.router.add_get(LOAD_PATH, load)
    app.router.add_post("/ui/api/runs", run)
    app.router.add_post("/ui/api/runs/{run_id}/stop", stop)
    app.router.add_get("/ui/api/history", history)
    app.router.add_get("/ui/api/history/{run_id}", history_run)
    app.router.add_get("/ui/{name}", page_file)
    app.on_response_prepare.append(page_headers)


# ---------------------------------------------------------------- the page's files

async def to_page(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def page_file(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    if name not in PAGE_FILES:
        raise web.HTTPNotFound()
    return web.Response(body=_read(name), content_type=PAGE_FILES[name], charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


@lru_cache(maxsize=None)
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


async def page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every `/ui` response: the CSP, no sniffing, no framing, no referrer; API answers are not cached."""
    if request.path == "/ui" or request.path.startswith("/ui/"):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Cache-Control", "no-store")


# ---------------------------------------------------------------- who may call the API

@web.middleware
async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/ui/api/` answers the page on this server only: not another site's page (which a browser would let send a
    simple request, with the user's access to this machine), nor a site whose name was rebound to 127.0.0.1."""
    if request.path.startswith("/ui/api/"):
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        if site not in (None, "same-origin", "none") or (origin is not None and urlsplit(origin).netloc != request.host):
            raise ApiError(403, f"refused a request from another site ({origin or site}): the page at /ui/ talks "
                                "to its own server only")
        if request.app[SERVICE].options.api_key is None and not local_name(request.host):
            raise ApiError(403, f"this server was reached as {request.host}: with no API key the page's API "
                                "answers only at an IP address or localhost (a name may be another site's, rebound "
                                "to this machine); open the page by its address, or serve with --api-key-env")
        if request.method == "POST" and request.content_type != "application/json":
            raise ApiError(415, "send the body as application/json")
    return await handler(request)


# ---------------------------------------------------------------- the fleet, its load, the history

async def fleet(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return web.json_response({**fleet_view(service.fleet), "history": service.history is not None,
                              "capacity": service.capacity, "max_queue": service.options.max_queue,
                              "version": __version__})


async def load(request: web.Request) -> web.Response:
    """Per server: requests in flight, its slots, requests waiting (every process's that shares the slots, and
    this one's); and the runs in progress."""
    service = request.app[SERVICE]
    servers = [now.as_json(url) for url, now in service.client.load().items()]
    return web.json_response({"servers": servers, "runs": len(service.runs), "capacity": service.capacity,
                              "max_queue": service.options.max_queue})


async def history(request: web.Request) -> web.Response:
    """The latest runs, newest first; `?q=words` keeps those whose prompt holds every word."""
    service = request.app[SERVICE]
    store = service.history
    if store is None:
        return web.json_response({"enabled": False, "runs": []})
    try:
        limit = min(max(int(request.query.get("limit", "50")), 1), HISTORY_LIMIT)
    except ValueError as exc:
        raise ApiError(400, "limit: a whole number, please", param="limit") from exc
    redact = service.page_redact
    # SQLite cuts each prompt; with room for a secret that starts before the cut, so it is masked whole.
    margin = max((len(secret) for secret in redact.secrets), default=0)
    try:
        stored = store.runs(limit, search=request.query.get("q"), prompt_chars=PROMPT_SHOWN + margin)
    except SearchError as exc:
        raise ApiError(400, str(exc), param="q") from exc
    runs = [{"id": r["id"], "started_at": r["started_at"], "prompt": redact(r["prompt"])[:PROMPT_SHOWN],
             "status": "running" if r["status"] == "incomplete" and r["id"] in service.runs else r["status"],
             "strategy": r["strategy"],
             "origin": r["origin"], "workers": r["workers"], "workers_ok": r["workers_ok"],
             "final_source": r["final_source"], "wall_s": r["wall_s"]}
            for r in stored]
    return web.json_response({"enabled": True, "runs": runs})


async def history_run(request: web.Request) -> web.Response:
    """One run from the history as the events the page draws."""
    service = request.app[SERVICE]
    run_id = request.match_info["run_id"]
    if service.history is None:
        raise ApiError(404, f"no run {run_id!r} in the history")
    # A run with a long conversation is a lot to read, lay out and encode: all done in a thread (on a connection
    # of its own), in pieces small enough that the event loop goes on serving meanwhile.
    body = await asyncio.to_thread(_replayed, service.history.path, run_id, service.page_redact)
    if body is None:
        raise ApiError(404, f"no run {run_id!r} in the history")
    return web.Response(text=body, content_type="application/json")


def _replayed(path: "Path", run_id: str, redact: "Redactor") -> str | None:
    from ..history import History

    with History(path) as store:
        record = store.run(run_id, exact=True)
    if record is None:
        return None
    return '{"events": [' + ", ".join(_encoded(view) for view in replay(record, redact)) + "]}"


def _encoded(view: View) -> str:
    """A view as JSON; a long conversation turn by turn (one encoding of it all would hold the interpreter)."""
    context = view.get("context")
    if not context or len(context) < 100:
        return json.dumps(view, ensure_ascii=False)
    head = json.dumps({k: v for k, v in view.items() if k != "context"}, ensure_ascii=False)
    turns = ", ".join(json.dumps(turn, ensure_ascii=False) for turn in context)
    return f'{head[:-1]}, "context": [{turns}]}}'



# ---------------------------------------------------------------- a run, as server-sent events

async def run(request: web.Request) -> web.StreamResponse:
    """Start a run and stream its events until it ends; the page closing the stream cancels it."""
    service = request.app[SERVICE]
    body: PageRunRequest = await parse(request, PageRunRequest)
    if not body.prompt.strip():
        raise ApiError(400, "prompt: there is no question to answer", param="prompt")
    context, prompt, _ = split([*((turn.role, turn.content) for turn in body.context), ("user", body.prompt)])
    strategy = body.strategy or service.fleet.strategy
    tokens = request.app[STOP_TOKENS]
    async with PageRun(service, prompt, strategy, context) as page_run:  # 429 before anything is sent
        token = tokens[page_run.run_id] = secrets.token_urlsafe(24)
        try:
            response = web.StreamResponse(headers={"Content-Type": SSE, "Cache-Control": "no-store",
                                                   "X-Accel-Buffering": "no", STOP_TOKEN_HEADER: token})
            await response.prepare(request)
            await write_stream(response, page_run, sse_events, lambda: b": keepalive\n\n")
        finally:
            tokens.pop(page_run.run_id, None)
    # Ended once the run is released: a history asked for as the stream ends no longer counts it as running.
    await response.write_eof()
    return response


async def stop(request: web.Request) -> web.Response:
    """The page's Stop: the run ends as stopped (its requests closed, the history says `stopped`), and its stream
    sends what it left before it closes."""
    service = request.app[SERVICE]
    run_id = request.match_info["run_id"]
    token = request.app[STOP_TOKENS].get(run_id)
    if run_id not in service.runs or token is None:
        raise ApiError(404, f"no run {run_id!r} in progress that this page started")
    if not hmac.compare_digest(request.headers.get(STOP_TOKEN_HEADER, "").encode(), token.encode()):
        raise ApiError(403, f"run {run_id!r} was started by another page or client: only it can stop the run")
    if not service.client.stop(run_id):
        raise ApiError(404, f"no run {run_id!r} in progress")
    return web.json_response({"stopped": run_id})


def sse_events(views: list[View]) -> bytes:
    return b"".join(b"data: " + json.dumps(view, ensure_ascii=False).encode() + b"\n\n" for view in views)


class PageRun(Feed[View]):
    """One run the page asked for, followed (a `Feed`): its events as the page's views."""

    def __init__(self, service: Service, prompt: str, strategy: str, context: "tuple[Message, ...]") -> None:
        reviewed = reviewing(service.fleet, strategy, True) is not None
        super().__init__(service, f"parallama:{strategy}" if reviewed else "parallama:latest")
        self.service: Service = service
        self.prompt = prompt
        self.strategy = strategy
        self.context = context
        self.view = RunView(service.page_redact, kept=service.history is not None)

    def start(self, on_event: "EventSink") -> Coroutine[Any, Any, "RunResult"]:
        return self.service.client.run(self.prompt, strategy=self.strategy, context=self.context,
                                       run_id=self.run_id, on_event=on_event)

    def render(self, event: "Event") -> list[View]:
        return self.view.feed(event)

    def shape(self, views: list[View]) -> list[View]:
        """The page reads slower than the run writes: neighbouring pieces of one agent's stream as one, with how
        many pieces (≈ tokens) it stands for; the text joined once (a client far behind costs linear time)."""
        out: list[View] = []
        for view in views:
            last = out[-1] if out else None
            if (last is not None and last["type"] == view["type"] in ("delta", "thinking")
                    and last["agent"] == view["agent"] and last["stage"] == view["stage"]):
                last.setdefault("parts", [last["text"]]).append(view["text"])
                last["n"] = last.get("n", 1) + 1
            else:
                out.append(view)
        for view in out:
            if "parts" in view:
                view["text"] = "".join(view.pop("parts"))
        return out

    def crashed(self, message: str) -> list[View]:
        return [{"type": "error", "message": message}]
