"""A real headless Chromium for the web page's tests (Debian's `chromium` and `chromium-driver`, driven by
Selenium), and `parallama serve` in a thread of its own, so the blocking browser calls never stall it."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path
from typing import Any

INSTALL_HINT = ("install it with `apt-get install chromium chromium-driver` (Debian, Ubuntu) and "
                "`pip install selenium` (the `test` extra)")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,800", "--force-device-scale-factor=1",
                  "--lang=en-US")


def find_chromium() -> tuple[str, str] | str:
    """(the browser, its driver), or why they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    browser = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if os.path.exists(p)), None)
    if browser is None or driver is None:
        return f"no {'Chromium' if browser is None else 'chromedriver'} found"
    return browser, driver


def open_chromium(browser: str, driver: str, profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    # The page's own size (the window's includes what headless Chromium counts as its frame).
    chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    return chrome


class ServeThread:
    """`parallama serve` on 127.0.0.1 (a free port) in its own thread and event loop, as the CLI runs it."""

    def __init__(self, config: Any, **options: Any) -> None:
        from parallama.config import as_fleet
        from parallama.serve import ServeOptions

        self.fleet = as_fleet(config)
        self.options = ServeOptions(**{"history": True, **options})
        self.loop = asyncio.new_event_loop()
        self.running: Any = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="serve", daemon=True)

    def __enter__(self) -> "ServeThread":
        from parallama.serve import start

        self._thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start(self.fleet, self.options, port=0), self.loop).result(60)
        return self

    @property
    def url(self) -> str:
        return self.running.url

    def call(self, fn: Any) -> Any:
        """`fn()` in the server's loop (to look at its state without racing it)."""
        async def inside() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(inside(), self.loop).result(60)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.running.close(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(60)
        self.loop.close()
