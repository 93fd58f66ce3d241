"""The exceptions the entry point turns into a one-line message instead of a traceback."""

import contextlib
import signal
from collections.abc import Callable


class PipelineError(Exception):
    """Bad input or state that the user can fix: the message names the file, row or config key."""


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP during a stage: the message says where it stopped and how to go
    on; the process exits with `code` (128 + the signal). A BaseException, as KeyboardInterrupt
    is, so that no `except Exception` on the way out swallows it."""

    def __init__(self, message: str, code: int = 128 + signal.SIGINT):
        super().__init__(message)
        self.code = code


def interrupt_code(e: BaseException) -> int | None:
    """128 + the signal when `e` is an interrupt: Ctrl-C's KeyboardInterrupt, the SystemExit that
    lock.die_with_parent makes of SIGTERM and SIGHUP, or an Interrupted; else None."""
    if isinstance(e, Interrupted):
        return e.code
    if isinstance(e, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(e, SystemExit) and e.code in (128 + signal.SIGTERM, 128 + signal.SIGHUP):
        return e.code
    return None


@contextlib.contextmanager
def interrupts_say(message: Callable[[], str]):
    """Ctrl-C, SIGTERM or SIGHUP inside the block becomes Interrupted(message()): the one line the
    entry point prints. An Interrupted from a block inside (which knew more) passes as it is."""
    try:
        yield
    except BaseException as e:
        code = interrupt_code(e)
        if code is None or isinstance(e, Interrupted):
            raise
        raise Interrupted(message(), code) from None
