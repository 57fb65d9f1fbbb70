"""Lifecycle events on the ``gipc`` logger, at DEBUG level.

gipc 1.8 logged its lifecycle to the ``gipc`` logger, and users switch it
on to debug.  ``import gipc`` must not import :mod:`logging` itself: its
at-fork hooks (its module lock, every handler's lock) would then run in
every child start.  So gipc logs only in a program that has imported
logging already, and asks the logger's level before it formats anything;
no hot path (``get()``, ``put()``, ``send()``, ``recv()``) logs.
"""
from typing import Any
import sys

_DEBUG = 10  # logging.DEBUG, without importing logging

_logger = None


def enabled() -> bool:
    """Whether :func:`debug` logs now: the program uses :mod:`logging`
    and has DEBUG enabled for gipc.  (Asked before a fork by code that
    would log after it: every page the parent writes while a child shares
    it is copied, and asking writes a few.)"""
    global _logger
    if _logger is None:
        logging = sys.modules.get("logging")
        if logging is None:
            return False
        _logger = logging.getLogger("gipc")
    return bool(_logger.isEnabledFor(_DEBUG))


def debug(message: Any, *args: Any) -> None:
    """Log ``message % args`` on the ``gipc`` logger at DEBUG, if the
    program uses :mod:`logging` and has that level enabled for gipc."""
    if enabled():
        _logger.debug(message, *args)  # type: ignore[union-attr]  # enabled
