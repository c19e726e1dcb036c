"""Key allocation: the key a new object gets, chosen with what the store itself says.

A file's object is at its path at upload time, unless another file's object has that key: a
cold file renamed away keeps its object, and a new file written under the old name (a
checkpoint written to a temp name and renamed, again and again) must not overwrite it. Then
the key gets a suffix, ``<path>~<12 hex digits>``. In a local folder, where an object cannot
also be a folder, an object in the way of the key's folders (``KeyInTheWay``) gets the suffix
in the key's folder instead (``ckpt~<hex>/model.pt``). A key the store would refuse for its
length is cut to fit (``ObjectStore.fit_key``). A file's own previous object is overwritten.
A key free when its upload started may be blocked when it completes (an object took the name
of one of its folders meanwhile, or objects made it a folder): the upload then completes at a
key chosen by the same rule (``completion_key``).

The store's quirks (the HEAD probe, a folder in the way) stay here, next to the stores; the
caller only learns the key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection

from tierfs.objects.base import KeyInTheWay, NoSuchObject, ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

#: Objects in the way of a key's folders moved past before giving up (each move is a new
#: random suffix, so one is almost always enough).
MAX_KEY_MOVES = 8


def unique_key(key: str) -> str:
    """A key beside ``key`` that no other file's object has."""
    return f"{key}~{uuid.uuid4().hex[:12]}"


def free_key(store: ObjectStore, key: str, own: str | None, held: Collection[str]) -> str:
    """A key for a new object at ``key`` (already fitted to the store) that no other file's
    object has: ``own`` is the file's own previous object (overwritten), ``held`` the keys of
    uploads under way. Blocking: it may ask the store (HEAD) a few times."""
    if key == own:
        return key
    if key in held:
        return store.fit_key(unique_key(key))
    moves = 0
    while True:
        try:
            store.head(key)
        except NoSuchObject:
            return key
        except KeyInTheWay as e:
            log.info("%s", e)
            moves += 1
            if moves > MAX_KEY_MOVES:  # a key the cut keeps putting under an object
                raise ObjectStoreError(f"no free key found for {key}") from None
            key = store.fit_key(unique_key(e.at) + key[len(e.at):])
            continue  # (that folder may be taken too: look again)
        log.info("%s already holds another file's object: this one gets a key of its own", key)
        return store.fit_key(unique_key(key))


def completion_key(store: ObjectStore, key: str) -> str:
    """The key an upload completes at whose own, ``key``, the store could no longer make
    (``KeyInTheWay``: an object took the name of one of its folders since the key was
    chosen, or objects made it a folder). Rather than fail every try for as long as that
    object stays, the upload moves past it as a new object's key would. No other upload
    holds what comes back, so no ``held``: past an object in the way the key gets a new
    random suffix, and where that object has gone meanwhile ``key`` itself comes back, held
    by this very upload. Nor is any file's own object overwritten there. Blocking."""
    return free_key(store, key, None, ())
