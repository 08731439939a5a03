"""How every command of the project ends when it fails: one line on stderr, ``PROG: error:
MESSAGE`` as argparse writes it (no traceback; it is kept at DEBUG level of this logger), and
one of these exit codes (docs/cli.md, "Errors and exit status"; the full table and a usage
example: "Notes from the code"):

    0    done
    2    user error: an option, config key or value, input file, store or model card that the
         command cannot use (argparse's usage errors too); fix the input and re-run
    1    runtime failure: an ``OSError`` (disk full, permission, ...) or a NaN loss
    130  interrupted (Ctrl-C)

Any other exception is a bug in this code: it is not caught, so Python prints its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import NoReturn

log = logging.getLogger(__name__)

USER_ERROR = 2
RUNTIME_FAILURE = 1
INTERRUPTED = 130

# What a stage that resumes after a failure says; ``rerun=RESUMES`` in cli_errors.
RESUMES = "re-run the same command: it resumes where it stopped"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def data_errors() -> tuple[type[Exception], ...]:
    """The shared floor's user-error classes, which every stage can raise."""
    from data.config import ConfigError
    from data.layout import DataError
    from data.rundir import CardError
    from data.store import StoreError

    return (ConfigError, DataError, StoreError, CardError)


def os_error_message(e: OSError, rerun: str | None = None) -> str:
    """``"PATH: CAUSE (errno N)"`` for an ``OSError``, then ``"; <fix and> RERUN"`` if given.

    ``"/c/train.zarr/images/c/3/0/0/0: No space left on device (errno 28); free space and
    re-run the same command: it resumes where it stopped"``.
    """
    if e.errno is None:  # raised by a library with a message of its own (h5py, lalframe)
        message = str(e) or type(e).__name__
    else:
        where = ""
        if e.filename is not None:
            where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 is not None else "")
            where += ": "
        message = f"{where}{e.strerror or errno.errorcode.get(e.errno, '')} (errno {e.errno})"
    if rerun:
        message += "; " + ("free space and " if e.errno in _NO_SPACE else "fix that and ") + rerun
    return message


def error_exit(e: BaseException, user_errors: tuple[type[BaseException], ...] = (),
               runtime_errors: tuple[type[BaseException], ...] = (),
               hints: Mapping[type[BaseException], str] | None = None,
               rerun: str | None = None) -> tuple[int, str] | None:
    """(exit code, one-line message) for exception ``e``, or None for a bug (not handled).

    ``user_errors`` and the shared :func:`data_errors` exit 2; ``runtime_errors`` and
    ``OSError`` exit 1. ``hints`` adds ``" (hint)"`` after the message of an instance of a
    class (the first class that matches, in the mapping's order). ``rerun`` follows an
    ``OSError``'s message: what re-running does.
    """
    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED, "interrupted" + (f"; {rerun}" if rerun else "")
    if isinstance(e, user_errors + data_errors()):
        code, message = USER_ERROR, _unwrap_worker(str(e))
    elif isinstance(e, runtime_errors):
        code, message = RUNTIME_FAILURE, _unwrap_worker(str(e))
    elif isinstance(e, OSError):
        return RUNTIME_FAILURE, os_error_message(e, rerun)
    else:
        return None
    for cls, hint in (hints or {}).items():
        if isinstance(e, cls):
            message += f" ({hint})"
            break
    return code, message


def _unwrap_worker(message: str) -> str:
    """The original message of an exception raised in a DataLoader worker process.

    torch re-raises it in the main process with its message replaced by ``"Caught X in
    DataLoader worker process N.\nOriginal Traceback (most recent call last): ... \n
    module.X: MESSAGE"``; every message here is one line, so MESSAGE is the last line, after
    the exception's qualified name."""
    if "in DataLoader worker process" not in message or "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    name, sep, original = last.partition(": ")
    return original if sep and " " not in name else last


def exit_with(prog: str, code: int, message: str) -> NoReturn:
    """Write ``PROG: error: MESSAGE`` to stderr and exit with ``code``."""
    _close_progress_bars()
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(code)


def _close_progress_bars() -> None:
    # A tqdm bar whose loop the failure left (its close() skipped) would otherwise share its
    # line with the error message; closing it clears or ends that line.
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            bar.close()


@contextlib.contextmanager
def cli_errors(prog: str, user_errors: tuple[type[BaseException], ...] = (),
               runtime_errors: tuple[type[BaseException], ...] = (),
               hints: Mapping[type[BaseException], str] | None = None,
               rerun: str | None = None) -> Iterator[None]:
    """Turn the failures of a command's body into ``PROG: error: MESSAGE`` and its exit code.

    See the module docstring for the codes and :func:`error_exit` for the arguments. A
    ``SystemExit`` from the body (argparse, or a deliberate silent exit) passes through.
    """
    try:
        yield
    except (Exception, KeyboardInterrupt) as e:
        verdict = error_exit(e, user_errors, runtime_errors, hints, rerun)
        if verdict is None:
            raise
        log.debug("%s failed", prog, exc_info=True)
        exit_with(prog, *verdict)
