"""Where organizations' data keys live: only wrapped by the master key, outside the database.

The wrapping is one small interface (`KeyStore`): create a data key, unwrap one, re-wrap every key
under the current master key, destroy an organization's keys. `LocalKeyStore` implements it with
AES-256-GCM under a master key from the environment and one file per organization; a cloud KMS
(per-organization keys, scheduled deletion) implements the same four methods, chosen by
`settings.VAULT_KEYSTORE`. Callers never see a master key.

The wrapped keys are kept outside the database on purpose: destroying them (crypto-shredding)
must make a database dump taken earlier unreadable, and a dump holds every table.

Unwrapped data keys stay in this process's memory for `CACHE_SECONDS` at most.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.utils.module_loading import import_string

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit GCM nonces
FORMAT = 1
CACHE_SECONDS = 60.0


class KeyStoreError(RuntimeError):
    """A data key cannot be made, found or unwrapped (never says more: no key material)."""


class MasterKeyMissing(KeyStoreError):
    pass


class KeyStore(Protocol):
    """Keeps each organization's data keys, wrapped. `owner` is the organization's public id."""

    def create(self, *, owner: str, version: int) -> bytes:
        """Make a random 256-bit data key `version` for `owner`, store it wrapped, return it.
        If that version already exists (a creation that crashed before its row committed), return
        the stored one rather than replace it."""

    def unwrap(self, *, owner: str, version: int) -> bytes:
        """The data key, or KeyStoreError (unknown, destroyed, or its wrapping tampered with)."""

    def versions(self, *, owner: str) -> list[int]:
        """The versions stored for `owner`."""

    def rewrap(self, *, owner: str) -> bool:
        """Re-wrap `owner`'s keys under the current master key; True if anything changed."""

    def owners(self) -> list[str]:
        """Every owner with stored keys."""

    def destroy(self, *, owner: str) -> None:
        """Destroy every key of `owner`: whatever they encrypted is unreadable from now on."""


# --- Master keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKey:
    id: str
    key: bytes


def master_key_id(key: bytes) -> str:
    return hashlib.sha256(b"agentplane-master-key-id\x00" + key).hexdigest()[:16]


def _decode(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise MasterKeyMissing("a master key is not valid base64") from error
    if len(key) != KEY_BYTES:
        raise MasterKeyMissing("a master key must be 32 bytes (base64 of 32 random bytes)")
    return key


def master_keys_from_text(text: str) -> list[MasterKey]:
    """The keys of a master key file: one base64 key a line, the current one first."""
    keys = [_decode(line) for line in text.splitlines() if line.strip()]
    return [MasterKey(master_key_id(key), key) for key in keys]


def development_master_key_file() -> Path:
    return Path(settings.DATA_DIR) / "master_key"


def load_master_keys() -> list[MasterKey]:
    """The current master key first, then previous ones (still unwrapping during a rotation).

    From `AGENTPLANE_MASTER_KEY` (+ `AGENTPLANE_MASTER_KEY_PREVIOUS`, comma-separated), or
    `AGENTPLANE_MASTER_KEY_FILE`; in development (DEBUG or tests) a file generated under `.data/`.
    """
    if settings.VAULT_MASTER_KEY:
        keys = [_decode(settings.VAULT_MASTER_KEY)]
        keys += [_decode(item) for item in settings.VAULT_MASTER_KEY_PREVIOUS.split(",") if item]
        return [MasterKey(master_key_id(key), key) for key in keys]
    path = (
        Path(settings.VAULT_MASTER_KEY_FILE)
        if settings.VAULT_MASTER_KEY_FILE
        else development_master_key_file()
    )
    if not path.exists():
        if settings.VAULT_MASTER_KEY_FILE or not settings.VAULT_GENERATE_MASTER_KEY:
            raise MasterKeyMissing(
                "no master key: set AGENTPLANE_MASTER_KEY or AGENTPLANE_MASTER_KEY_FILE"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
    keys = master_keys_from_text(path.read_text())
    if not keys:
        raise MasterKeyMissing(f"the master key file {path} is empty")
    return keys


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader sees the old file or the new one), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- The local implementation --------------------------------------------------------------------


def _associated_data(owner: str, version: int, master_id: str) -> bytes:
    # A wrapped key copied to another organization or version does not unwrap.
    return f"agentplane-data-key\x00{owner}\x00{version}\x00{master_id}".encode()


class LocalKeyStore:
    """One JSON file per organization under `directory`: its data keys, each wrapped
    (AES-256-GCM, fresh nonce) by the master key named in the entry."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory or settings.VAULT_KEYSTORE_DIR)
        self._lock = threading.Lock()

    def _path(self, owner: str) -> Path:
        if not owner or not all(ch.isalnum() or ch == "-" for ch in owner):
            raise KeyStoreError("not a key owner")
        return self.directory / f"{owner}.json"

    def _read(self, owner: str) -> dict[str, dict[str, str]]:
        path = self._path(owner)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise KeyStoreError("a key file cannot be read") from error
        return data.get("keys", {})

    def _write(self, owner: str, keys: dict[str, dict[str, str]]) -> None:
        _write_private(self._path(owner), json.dumps({"format": FORMAT, "keys": keys}, indent=1))

    @staticmethod
    def _wrap(owner: str, version: int, key: bytes, master: MasterKey) -> dict[str, str]:
        nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = AESGCM(master.key).encrypt(
            nonce, key, _associated_data(owner, version, master.id)
        )
        return {
            "master": master.id,
            "nonce": base64.b64encode(nonce).decode(),
            "wrapped": base64.b64encode(wrapped).decode(),
        }

    @staticmethod
    def _unwrap(owner: str, version: int, entry: dict[str, str]) -> bytes:
        masters = {master.id: master for master in load_master_keys()}
        master = masters.get(entry.get("master", ""))
        if master is None:
            raise KeyStoreError("the master key that wrapped this data key is not configured")
        try:
            return AESGCM(master.key).decrypt(
                base64.b64decode(entry["nonce"]),
                base64.b64decode(entry["wrapped"]),
                _associated_data(owner, version, master.id),
            )
        except (InvalidTag, KeyError, ValueError, binascii.Error) as error:
            raise KeyStoreError("a data key does not unwrap") from error

    def create(self, *, owner: str, version: int) -> bytes:
        with self._lock:
            keys = self._read(owner)
            if str(version) in keys:
                return self._unwrap(owner, version, keys[str(version)])
            key = secrets.token_bytes(KEY_BYTES)
            keys[str(version)] = self._wrap(owner, version, key, load_master_keys()[0])
            self._write(owner, keys)
            return key

    def unwrap(self, *, owner: str, version: int) -> bytes:
        entry = self._read(owner).get(str(version))
        if entry is None:
            raise KeyStoreError("no such data key")
        return self._unwrap(owner, version, entry)

    def versions(self, *, owner: str) -> list[int]:
        return sorted(int(version) for version in self._read(owner))

    def rewrap(self, *, owner: str) -> bool:
        current = load_master_keys()[0]
        with self._lock:
            keys = self._read(owner)
            stale = [v for v, entry in keys.items() if entry.get("master") != current.id]
            if not stale:
                return False
            for version in stale:
                key = self._unwrap(owner, int(version), keys[version])
                keys[version] = self._wrap(owner, int(version), key, current)
            self._write(owner, keys)
            return True

    def owners(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(path.stem for path in self.directory.glob("*.json"))

    def destroy(self, *, owner: str) -> None:
        path = self._path(owner)
        with self._lock:
            if path.exists():
                # Overwrite before unlinking: the wrapped keys do not linger in the freed blocks
                # (as far as the filesystem honours it; backups of this directory are the
                # operator's to expire, see docs/data-protection.md).
                size = path.stat().st_size
                with open(path, "r+b") as stream:
                    stream.write(secrets.token_bytes(size))
                    stream.flush()
                    os.fsync(stream.fileno())
                path.unlink()
        forget(owner)


# --- The configured store and the process cache -------------------------------------------------

_store: KeyStore | None = None
_cache: dict[tuple[str, int], tuple[bytes, float]] = {}
_ciphers: dict[tuple[str, int], tuple[AESGCM, float]] = {}
_cache_lock = threading.Lock()


def store() -> KeyStore:
    global _store
    if _store is None:
        _store = import_string(settings.VAULT_KEYSTORE)()
    return _store


def reset() -> None:
    """Forget the configured store and every cached key (tests, settings changes)."""
    global _store
    _store = None
    with _cache_lock:
        _cache.clear()
        _ciphers.clear()


def forget(owner: str) -> None:
    with _cache_lock:
        for cached in [item for item in _cache if item[0] == owner]:
            del _cache[cached]
        for cached in [item for item in _ciphers if item[0] == owner]:
            del _ciphers[cached]


def data_key(owner: str, version: int) -> bytes:
    """The unwrapped data key, from this process's short-lived cache or the store."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get((owner, version))
        if hit is not None and hit[1] > now:
            return hit[0]
    key = store().unwrap(owner=owner, version=version)
    with _cache_lock:
        _cache[(owner, version)] = (key, now + CACHE_SECONDS)
    return key


def cipher(owner: str, version: int) -> AESGCM:
    """AES-256-GCM under the data key (the key schedule computed once per cache period)."""
    now = time.monotonic()
    hit = _ciphers.get((owner, version))
    if hit is not None and hit[1] > now:
        return hit[0]
    made = AESGCM(data_key(owner, version))
    with _cache_lock:
        _ciphers[(owner, version)] = (made, now + CACHE_SECONDS)
    return made


def create_data_key(owner: str, version: int) -> bytes:
    key = store().create(owner=owner, version=version)
    with _cache_lock:
        _cache[(owner, version)] = (key, time.monotonic() + CACHE_SECONDS)
    return key
