"""Retries with full jitter, in one place, for every store call that may fail transiently.

botocore retries the request itself (its "standard" mode); this layer also covers what botocore
does not: a connection reset while a response body streams in, and a burst of 503 SlowDown
longer than botocore's own attempts.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from tierfs.objects.base import TransientError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Attempts in all, and the backoff's base and ceiling in seconds (full jitter: each wait is
#: uniform in [0, min(cap, base * 2**attempt)], as AWS recommends for many clients at once).
ATTEMPTS = 5
BASE_DELAY = 0.1
MAX_DELAY = 5.0


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    return rng() * min(MAX_DELAY, BASE_DELAY * 2**attempt)


def retry_transient(classify: Callable[[BaseException], BaseException | None],
                    attempts: int = ATTEMPTS, sleep: Callable[[float], None] = time.sleep
                    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry ``fn`` while ``classify(error)`` is a TransientError; any other result of
    ``classify`` is raised at once in place of the original error (None: re-raise as is)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(attempts):
                try:
                    return fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - classified right below
                    mapped = classify(e)
                    if mapped is None:
                        raise
                    if not isinstance(mapped, TransientError) or attempt == attempts - 1:
                        raise mapped from e
                    delay = backoff(attempt)
                    log.warning("%s failed (%s); retry %d of %d in %.2fs", fn.__name__,
                                mapped, attempt + 1, attempts - 1, delay)
                    sleep(delay)
            raise AssertionError("unreachable")

        return wrapper

    return decorate
