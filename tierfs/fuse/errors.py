"""The one place where exceptions become FUSE errnos: only the FUSE layer imports pyfuse3."""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def to_fuse_errors(fn: Callable[P, Coroutine[Any, Any, R]]
                   ) -> Callable[P, Coroutine[Any, Any, R]]:
    """Map every exception of a FUSE handler to an errno so no request can kill the daemon.

    OSError keeps its errno; anything else is a bug, logged with its traceback and reported as
    EIO, and the mount stays up.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            if e.errno is None:
                log.exception("%s: OSError without errno", fn.__name__)
                raise pyfuse3.FUSEError(errno.EIO) from None
            raise pyfuse3.FUSEError(e.errno) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper
