"""AES-256-GCM keys that encrypt secrets at rest (device secrets, merchant keys).

The keyring is a JSON file readable only by the gateway's user:
`{"active": "k2", "keys": {"k1": "<base64>", "k2": "<base64>"}}`. New secrets
are encrypted under the active key; every key in the file can still decrypt,
so rotation never stops verification. Each ciphertext is bound to what it
protects through the associated data (e.g. `device:123456789`), so a stored
secret cannot be copied onto another device.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12  # the GCM standard nonce; random nonces are safe below 2^32 encryptions per key


class KeyringError(RuntimeError):
    """The keyring file is missing, unreadable, or does not hold the key asked for."""


class Keyring:
    def __init__(self, path: Path, active: str, keys: dict[str, bytes]) -> None:
        self.path = path
        self.active = active
        self._keys = keys

    @classmethod
    def load(cls, path: Path | str, create: bool = True) -> "Keyring":
        """Read the keyring; with `create`, make one with a fresh key if none exists."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise KeyringError(f"no keyring at {path}")
            keyring = cls(path, "k1", {"k1": secrets.token_bytes(KEY_BYTES)})
            keyring.save()
            return keyring
        try:
            doc = json.loads(path.read_text())
            keys = {key_id: base64.b64decode(value, validate=True) for key_id, value in doc["keys"].items()}
            active = doc["active"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KeyringError(f"keyring {path} is not readable: {type(e).__name__}") from None
        if active not in keys or any(len(k) != KEY_BYTES for k in keys.values()):
            raise KeyringError(f"keyring {path}: active key missing or a key is not {KEY_BYTES} bytes")
        return cls(path, active, keys)

    def save(self) -> None:
        """Write atomically with owner-only permissions."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"active": self.active, "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()}}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def reload(self) -> None:
        fresh = Keyring.load(self.path, create=False)
        self.active, self._keys = fresh.active, fresh._keys

    def rotate(self) -> str:
        """Add a fresh key and make it active; older keys stay for decryption."""
        number = 1 + max(int(k[1:]) for k in self._keys if k[1:].isdigit())
        key_id = f"k{number}"
        self._keys[key_id] = secrets.token_bytes(KEY_BYTES)
        self.active = key_id
        self.save()
        return key_id

    def retire(self, key_id: str) -> None:
        if key_id == self.active:
            raise KeyringError(f"{key_id} is the active key; rotate first")
        self._keys.pop(key_id, None)
        self.save()

    def encrypt(self, plaintext: bytes, aad: str) -> tuple[str, str]:
        """Return (key id, base64 of nonce + ciphertext) under the active key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self._keys[self.active]).encrypt(nonce, plaintext, aad.encode())
        return self.active, base64.b64encode(nonce + sealed).decode()

    def decrypt(self, key_id: str, token: str, aad: str) -> bytes:
        if key_id not in self._keys:
            # Another process may have rotated; the file is the source of truth.
            self.reload()
        try:
            key = self._keys[key_id]
        except KeyError:
            raise KeyringError(f"key {key_id} is not in the keyring {self.path}") from None
        raw = base64.b64decode(token)
        try:
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad.encode())
        except InvalidTag:
            raise KeyringError(f"a secret encrypted under {key_id} failed authentication") from None

    def __repr__(self) -> str:
        return f"Keyring({str(self.path)!r}, active={self.active!r}, keys={list(self._keys)})"
