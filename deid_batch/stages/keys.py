"""The run key: one secret that derives output names and new UIDs (HMAC).

The key comes from the user (``--key-file`` / ``key_file=``, or the ``DEID_BATCH_KEY`` environment
variable), or is generated once per output and kept in the manifest folder (``_key``, mode 0600),
never in the output folder and never in logs. Re-running into the same output with the same
manifest folder reuses it, so the same original UID maps to the same new UID in every run.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets

from deid_batch.errors import ConfigError
from deid_batch.hygiene import private_folder

__all__ = ["ENV_VAR", "KEY_FILE_NAME", "find_key", "key_fingerprint", "resolve_key", "store_key"]

logger = logging.getLogger(__name__)

ENV_VAR = "DEID_BATCH_KEY"
KEY_FILE_NAME = "_key"


def _read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read key file {path}: {exc.strerror}; give a readable file with --key-file"
        ) from None
    if len(data) < 16:
        raise ConfigError(f"key file {path} holds fewer than 16 bytes; use a longer random key")
    return data


def resolve_key(manifest_dir: str, key_file: str | None = None) -> tuple[bytes, bool]:
    """Return ``(key, generated)``: the given or stored run key, or a new one (``generated``).

    Nothing is written: a new key is kept with :func:`store_key` once the run has passed its checks.
    """
    if key_file:
        return _read_key_file(key_file), False
    env = os.environ.get(ENV_VAR)
    if env:
        if len(env) < 16:
            raise ConfigError(f"{ENV_VAR} holds fewer than 16 characters; use a longer random key")
        return env.encode("utf-8"), False
    stored = os.path.join(manifest_dir, KEY_FILE_NAME)
    if os.path.exists(stored):
        return _read_key_file(stored), False
    return secrets.token_hex(32).encode("ascii"), True


def find_key(manifest_dir: str | None, key_file: str | None = None) -> bytes | None:
    """The run key if one is at hand (``key_file``, ``$DEID_BATCH_KEY``, the manifest folder's
    ``_key``), else None; never generates one."""
    if key_file or os.environ.get(ENV_VAR):
        return resolve_key(manifest_dir or "", key_file)[0]
    if manifest_dir and os.path.exists(os.path.join(manifest_dir, KEY_FILE_NAME)):
        return _read_key_file(os.path.join(manifest_dir, KEY_FILE_NAME))
    return None


def store_key(manifest_dir: str, key: bytes) -> None:
    """Keep a generated key in the manifest folder (mode 0600; the folder 0700)."""
    private_folder(manifest_dir)
    stored = os.path.join(manifest_dir, KEY_FILE_NAME)
    fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    logger.info("generated a new run key in the manifest folder (keep it to reproduce UIDs)")


def key_fingerprint(key: bytes) -> str:
    """A short non-secret fingerprint of the key, to detect a resume with another key."""
    return hmac.new(key, b"fingerprint", hashlib.sha256).hexdigest()[:16]
