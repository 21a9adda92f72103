"""`parallama serve`: the whole fleet as one model behind Ollama's and OpenAI's APIs.

`app` builds the aiohttp app and its error and key middlewares; `ollama_api` and `openai_api` hold the routes and
the wire formats they write; `wire` the requests they accept; `runs` the shared fleet client, the queue bound and
each request's run (`Reply`); `narration` what a chat client sees of a run; `models` the model names and their
descriptions; `conversation` how a chat's messages become a run's context and prompt.

    running = await start(load_config("config.json"), ServeOptions(progress="thinking"), port=0)
    ... running.url ...
    await running.close()
"""

from __future__ import annotations

from .app import DEFAULT_PORT, Running, create_app, start
from .service import ServeOptions

__all__ = ["DEFAULT_PORT", "Running", "ServeOptions", "create_app", "start"]
