"""Signing the chain's head at an interval and on demand, and keeping every signed head.

Each signed head is one file, `head-<event_count>.json`, written atomically (temporary
file, fsync, rename, fsync of the folder) into a folder outside the ledger: truncating the
ledger does not touch them, and they can be copied anywhere (the public page lists them).
A head is signed only when the chain has grown since the last one, so an idle server
writes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dpgate_server.durable import replace_text
from dpgate_server.ledger.model import ChainHead
from dpgate_server.signed_heads.keys import public_key_bytes
from dpgate_server.signed_heads.signed_head import SignedHead, SignedHeadFormatError, sign_head

_log = logging.getLogger(__name__)
_PREFIX = "head-"
_SUFFIX = ".json"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class HeadPublisher:
    """Signs the head returned by `read_head` into `folder`; thread-safe.

    Args:
        read_head: the chain's current head (the ledger's `head`).
        key: the server's Ed25519 signing key.
        folder: where signed heads are written (created owner-only if missing).
        interval_s: how often the background thread signs (if the chain has grown).
        clock: the signing time (tests may fix it).
    """

    def __init__(
        self,
        read_head: Callable[[], ChainHead],
        key: Ed25519PrivateKey,
        folder: Path,
        interval_s: float,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._read_head = read_head
        self._key = key
        self._folder = folder
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, SignedHead] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="head-signer", daemon=True)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def public_key(self) -> str:
        """The server's public key, hex (what a signed head must carry to be trusted)."""
        return public_key_bytes(self._key).hex()

    @property
    def key_id(self) -> str:
        """A short name of the key: the first 16 hex of SHA-256 of the public key."""
        return hashlib.sha256(public_key_bytes(self._key)).hexdigest()[:16]

    @property
    def folder(self) -> Path:
        """Where the signed heads are written."""
        return self._folder

    def start(self) -> None:
        """Sign the current head now, then at every interval."""
        self.publish_now()
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def publish_now(self) -> SignedHead | None:
        """Sign and write the current head unless it is already signed; return the latest.

        None only for an empty chain with nothing signed yet.
        """
        with self._lock:
            head = self._read_head()
            latest = self.latest()
            if latest is not None and latest.event_count == head.count:
                return latest
            if head.count == 0:
                return latest
            signed = sign_head(self._key, head, self._clock())
            replace_text(self._folder / _file_name(head.count), signed.to_json())
            _log.info("signed audit head %d %s", head.count, head.hash)
            return signed

    def latest(self) -> SignedHead | None:
        """The signed head with the most events, or None."""
        history = self.history(limit=1)
        return history[0] if history else None

    def history(self, limit: int | None = None) -> list[SignedHead]:
        """Signed heads in the folder, the longest chain first (unreadable files skipped)."""
        names = sorted(
            (n for n in os.listdir(self._folder) if n.startswith(_PREFIX) and n.endswith(_SUFFIX)),
            reverse=True,
        )
        heads: list[SignedHead] = []
        for name in names:
            if limit is not None and len(heads) >= limit:
                break
            head = self._read(name)
            if head is not None:
                heads.append(head)
        return heads

    def get(self, event_count: int) -> SignedHead | None:
        """The signed head of `event_count` events, if one was published."""
        if event_count < 0:
            return None
        return self._read(_file_name(event_count))

    def _read(self, name: str) -> SignedHead | None:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        try:
            head = SignedHead.from_json((self._folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, SignedHeadFormatError) as exc:
            _log.warning("skipping unreadable signed head %s: %s", name, exc)
            return None
        self._cache[name] = head
        return head

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.publish_now()
            except Exception:
                _log.exception("could not sign the audit head")


def _file_name(event_count: int) -> str:
    return f"{_PREFIX}{event_count:012d}{_SUFFIX}"
