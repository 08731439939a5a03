"""Progress of long work that reads well wherever the output goes: a tqdm bar on a terminal;
when stderr is a file or a pipe (a SLURM job, ``nohup``, ``2> log``), a plain line at most every
:data:`LOG_INTERVAL` seconds and one when the work ends, instead of a bar that writes thousands
of carriage-return updates into one line of the log. Every stage makes its bars here.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

from data.config import ConfigError

LOG_INTERVAL = 30.0  # s between progress lines when stderr is not a terminal
INTERVAL_ENV = "G2NET_PROGRESS_INTERVAL"  # overrides it


def log_interval() -> float:
    """:data:`LOG_INTERVAL`, or the seconds ``G2NET_PROGRESS_INTERVAL`` gives (>= 0)."""
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return LOG_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise ConfigError(f"{INTERVAL_ENV}={text!r}: expected seconds >= 0")
    return value


class _Lines:
    """The stream under a :class:`LineProgress`: passes whole lines, drops what tqdm writes to
    redraw or clear a line in place (a bare newline or carriage return)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> int:
        if s.strip("\r\n"):
            self.stream.write(s)
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


class LineProgress(tqdm):
    """A tqdm whose display is one whole line (``desc: 50% 5/10 [00:03<00:03, 1.6it/s,
    loss=0.5]``, no bar) written at most every ``interval`` s, and always once at the end
    (also for ``leave=False``: a log has no line to clear, and its end is worth keeping)."""

    def __init__(self, *args, interval: float = LOG_INTERVAL, **kwargs):
        self._interval = interval
        kwargs["leave"] = True
        self._last_line = time.monotonic()  # no line at the start: the first comes after one
        kwargs["file"] = _Lines(kwargs.get("file") or sys.stderr)
        kwargs.pop("dynamic_ncols", None)
        kwargs["ncols"] = 0  # tqdm's statistics without the bar
        kwargs["mininterval"] = min(interval, kwargs.get("mininterval", 0.1))
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing its line (leave=False): nothing was drawn in place
            return True
        closing = self.disable  # tqdm.close sets it before the last display
        now = time.monotonic()
        if not closing and now - self._last_line < self._interval:
            return True
        self._last_line = now
        self.fp.write((msg if msg is not None else str(self)).strip() + "\n")
        self.fp.flush()
        return True


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(*, file=None, interval: float | None = None, **kwargs) -> tqdm:
    """``tqdm(**kwargs)`` writing to ``file`` (stderr): a bar on a terminal, a
    :class:`LineProgress` (a line every ``interval`` s, default :func:`log_interval`) anywhere
    else. ``disable=True`` gives a silent bar either way. ConfigError for a malformed
    ``G2NET_PROGRESS_INTERVAL``."""
    stream = sys.stderr if file is None else file
    if stream is None:  # no stderr at all (pythonw, a detached daemon): nothing to show
        kwargs["disable"] = True
        stream = open(os.devnull, "w")  # noqa: SIM115  (tqdm wants a stream even disabled)
    if _is_terminal(stream):
        return tqdm(file=stream, **kwargs)
    return LineProgress(file=stream, interval=log_interval() if interval is None else interval,
                        **kwargs)
