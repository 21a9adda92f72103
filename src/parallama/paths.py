"""Where parallama keeps its files: one environment variable, `PARALLAMA_HOME`, moves them all.

Without it, the platform's own places (platformdirs): the state directory for the record of started instances
and their logs, the data directory for the run history.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "PARALLAMA_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser() if value else None


def state_dir() -> Path:
    """Instances parallama started, and their logs."""
    home = _home()
    if home is not None:
        return home / "state"
    import platformdirs

    return Path(platformdirs.user_state_dir("parallama", appauthor=False))


def data_dir() -> Path:
    """The history database."""
    home = _home()
    if home is not None:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir("parallama", appauthor=False))


def history_db() -> Path:
    return data_dir() / "history.db"
