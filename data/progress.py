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

# s between progress lines when stderr is not a terminal; G2NET_PROGRESS_INTERVAL overrides.
LOG_INTERVAL = float(os.environ.get("G2NET_PROGRESS_INTERVAL", "30"))


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
    loss=0.5]``, no bar) written at most every ``interval`` s, and always once at the end."""

    def __init__(self, *args, interval: float = LOG_INTERVAL, **kwargs):
        self._interval = interval
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
    :class:`LineProgress` (a line every ``interval`` s, default :data:`LOG_INTERVAL`) anywhere
    else. ``disable=True`` gives a silent bar either way."""
    stream = sys.stderr if file is None else file
    if _is_terminal(stream):
        return tqdm(file=stream, **kwargs)
    return LineProgress(file=stream, interval=LOG_INTERVAL if interval is None else interval,
                        **kwargs)

