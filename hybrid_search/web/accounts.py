"""Who may write: the admin password, API tokens and the cookie-signing key, kept on disk.

Everything lives in `<data_dir>/web/`, readable by the owner only:

* `secret_key`: random key that signs session cookies, made on first run;
* `admin.json`: the admin password's hash (werkzeug.security, never the password itself);
* `tokens.json`: API tokens, stored as SHA-256 digests; the token itself is shown once.

Every file is written to a temporary file and renamed into place, so a crash never leaves a
half-written one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from ..exceptions import StorageError

__all__ = ["Accounts", "ApiToken", "WEB_DIR"]

WEB_DIR = "web"
TOKEN_PREFIX = "hs_"
GENERATED_PASSWORD_BYTES = 15
HASH_METHOD = "scrypt"  # werkzeug's default: slow on purpose


@dataclass(frozen=True)
class ApiToken:
    """A stored API token: its public id, label and creation time (never the secret)."""

    id: str
    name: str
    created_at: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {path.name} in the web folder: {e}") from None
    if not isinstance(data, dict):
        raise StorageError(f"{path.name} in the web folder is not a JSON object")
    return data


class Accounts:
    """The admin password, API tokens and secret key of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / WEB_DIR
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
        except OSError as e:
            raise StorageError(f"cannot create the web folder: {e.strerror or e}") from None
        self._lock = threading.Lock()

    # -- secret key ------------------------------------------------------------------------
    def secret_key(self) -> str:
        """The cookie-signing key, created on first use."""
        path = self.dir / "secret_key"
        with self._lock:
            try:
                key = path.read_text(encoding="ascii").strip()
            except FileNotFoundError:
                key = ""
            except (OSError, UnicodeDecodeError) as e:
                raise StorageError(f"cannot read the secret key file: {e}") from None
            if len(key) < 32:
                key = secrets.token_hex(32)
                _write_private(path, key.encode("ascii"))
            return key

    # -- admin password --------------------------------------------------------------------
    @property
    def _admin_file(self) -> Path:
        return self.dir / "admin.json"

    def ensure_admin(self, configured: str = "") -> str | None:
        """Make sure an admin password exists; returns it only if it was generated just now.

        A configured password always wins: its hash replaces a stored one that differs.
        """
        with self._lock:
            stored = _read_json(self._admin_file).get("password_hash")
            if configured:
                if not (isinstance(stored, str) and check_password_hash(stored, configured)):
                    self._store_hash(generate_password_hash(configured), generated=False)
                return None
            if isinstance(stored, str) and stored:
                return None
            password = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
            self._store_hash(generate_password_hash(password), generated=True)
            return password

    def _store_hash(self, password_hash: str, *, generated: bool) -> None:
        body = {"password_hash": password_hash, "generated": generated, "updated_at": _now()}
        _write_private(self._admin_file, json.dumps(body, indent=2).encode("utf-8"))

    def check_password(self, password: str) -> bool:
        """Whether `password` is the admin password."""
        stored = _read_json(self._admin_file).get("password_hash")
        return isinstance(stored, str) and bool(stored) and check_password_hash(stored, password)

    def set_password(self, password: str, *, method: str = HASH_METHOD) -> None:
        """Replace the admin password (`method`: a werkzeug.security hash method)."""
        with self._lock:
            self._store_hash(generate_password_hash(password, method=method), generated=False)

    def password_fingerprint(self) -> str:
        """A short digest of the stored hash: sessions made before a password change end."""
        stored = str(_read_json(self._admin_file).get("password_hash", ""))
        return hashlib.sha256(stored.encode("utf-8")).hexdigest()[:16]

    # -- API tokens ------------------------------------------------------------------------
    @property
    def _tokens_file(self) -> Path:
        return self.dir / "tokens.json"

    def _token_rows(self) -> list[dict[str, str]]:
        rows = _read_json(self._tokens_file).get("tokens", [])
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def tokens(self) -> list[ApiToken]:
        """Every API token, oldest first."""
        return [ApiToken(str(r.get("id", "")), str(r.get("name", "")), str(r.get("created_at")))
                for r in self._token_rows()]

    def create_token(self, name: str) -> tuple[str, ApiToken]:
        """A new API token: the secret (shown once, never stored) and its stored record."""
        token_id = secrets.token_hex(4)
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = ApiToken(token_id, " ".join(name.split())[:80] or "API token", _now())
        with self._lock:
            rows = self._token_rows()
            rows.append({"id": record.id, "name": record.name, "created_at": record.created_at,
                         "sha256": hashlib.sha256(secret.encode("utf-8")).hexdigest()})
            _write_private(self._tokens_file, json.dumps({"tokens": rows}, indent=2).encode())
        return secret, record

    def revoke_token(self, token_id: str) -> bool:
        """Delete a token by its id; whether it existed."""
        with self._lock:
            rows = self._token_rows()
            kept = [r for r in rows if r.get("id") != token_id]
            if len(kept) == len(rows):
                return False
            _write_private(self._tokens_file, json.dumps({"tokens": kept}, indent=2).encode())
            return True

    def check_token(self, secret: str) -> ApiToken | None:
        """The token record that `secret` belongs to, if any."""
        digest = hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()
        found = None
        for row in self._token_rows():
            # Compare against every row so the time taken says nothing about which matched.
            if hmac.compare_digest(str(row.get("sha256", "")), digest):
                found = ApiToken(str(row.get("id")), str(row.get("name")),
                                 str(row.get("created_at")))
        return found
