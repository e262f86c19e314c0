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
from deid_batch.stages import storage

__all__ = ["ENV_VAR", "KEY_FILE_NAME", "find_key", "key_fingerprint", "resolve_key", "store_key"]

logger = logging.getLogger(__name__)

ENV_VAR = "DEID_BATCH_KEY"
KEY_FILE_NAME = "_key"


def _read_key_file(path: str, options: storage.StorageOptions | None = None) -> bytes:
    try:
        data = storage.read_bytes(path, options).strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read key file {path}: {exc.strerror or type(exc).__name__}; "
            "give a readable file with --key-file"
        ) from None
    if len(data) < 16:
        raise ConfigError(f"key file {path} holds fewer than 16 bytes; use a longer random key")
    return data


def resolve_key(manifest_dir: str, key_file: str | None = None,
                storage_options: storage.StorageOptions | None = None) -> tuple[bytes, bool]:
    """Return ``(key, generated)``: the given or stored run key, or a new one (``generated``).

    Nothing is written: a new key is kept with :func:`store_key` once the run has passed its checks.
    """
    if key_file:
        return _read_key_file(storage.normalise(key_file), storage_options), False
    env = os.environ.get(ENV_VAR)
    if env:
        if len(env) < 16:
            raise ConfigError(f"{ENV_VAR} holds fewer than 16 characters; use a longer random key")
        return env.encode("utf-8"), False
    folder = storage.Folder(manifest_dir, storage_options)
    if folder.exists(KEY_FILE_NAME):
        return _read_key_file(folder.path(KEY_FILE_NAME), storage_options), False
    return secrets.token_hex(32).encode("ascii"), True


def find_key(manifest_dir: str | None, key_file: str | None = None) -> bytes | None:
    """The run key if one is at hand (``key_file``, ``$DEID_BATCH_KEY``, the manifest folder's
    ``_key``), else None; never generates one."""
    if key_file or os.environ.get(ENV_VAR):
        return resolve_key(manifest_dir or "", key_file)[0]
    if manifest_dir and os.path.exists(os.path.join(manifest_dir, KEY_FILE_NAME)):
        return _read_key_file(os.path.join(manifest_dir, KEY_FILE_NAME))
    return None


def store_key(manifest_dir: str, key: bytes, storage_options: storage.StorageOptions | None = None) -> None:
    """Keep a generated key in the manifest folder (local: mode 0600, the folder 0700; on object
    storage access is the bucket policy's: keep the manifest prefix private)."""
    folder = storage.Folder(manifest_dir, storage_options)
    folder.create()
    folder.create_private(KEY_FILE_NAME, key + b"\n")
    logger.info("generated a new run key in the manifest folder (keep it to reproduce UIDs)")


def key_fingerprint(key: bytes) -> str:
    """A short non-secret fingerprint of the key, to detect a resume with another key."""
    return hmac.new(key, b"fingerprint", hashlib.sha256).hexdigest()[:16]
