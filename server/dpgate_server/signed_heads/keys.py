"""The server's Ed25519 signing key: one PEM file, owner-only, outside the data folder.

Outside the data folder because whoever can rewrite the data (or a backup of it) must not
also hold the key that vouches for the audit chain. Created on first start if missing, so a
deployment needs no separate key ceremony; rotate by moving the file away (earlier heads
stay verifiable by their embedded public key and stop matching the server's new one).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dpgate_server.durable import create_exclusively


class SigningKeyError(ValueError):
    """The signing key cannot be used: inside the data folder, unreadable or not Ed25519."""


def load_or_create_signing_key(path: Path, data_dir: Path) -> Ed25519PrivateKey:
    """The key at `path`, created (mode 0600, folder 0700) if the file does not exist.

    Raises:
        SigningKeyError: `path` is inside `data_dir`, or the file is not an Ed25519 key.
    """
    resolved = path.resolve()
    if resolved.is_relative_to(data_dir.resolve()):
        raise SigningKeyError(
            f"audit.signing_key_file {path} is inside storage.data_dir {data_dir}: keep the "
            "key that vouches for the audit chain apart from the data"
        )
    if not path.exists():
        _create(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    create_exclusively(path, pem)  # False: another process created it first; use theirs
