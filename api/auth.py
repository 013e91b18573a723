"""Optional API keys: with `API_KEYS` set, `/v1/*` and `/metrics` need `Authorization: Bearer <key>`.
`ADMIN_API_KEYS` are valid keys too (they also read every user's results, see results/access.py).

Keys are compared in constant time and never logged (neither the configured ones nor what a client sent).
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from .errors import APIError


class APIKeys:
    def __init__(self, secret: SecretStr | None, admin: SecretStr | None = None):
        # Admin keys are accepted where keys are required; they do not turn the requirement on.
        raw = ",".join(s.get_secret_value() for s in (secret, admin) if s) if secret else ""
        self._keys = [key.strip().encode() for key in raw.split(",") if key.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise a 401 APIError unless keys are off or the header carries one of them."""
        if not self._keys:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Missing API key: send the header 'Authorization: Bearer <key>'.", "missing_api_key")
        sent = token.strip().encode()
        # compare_digest with every key, no early exit, so timing says nothing about which key is close.
        matches = [hmac.compare_digest(sent, key) for key in self._keys]
        if not any(matches):
            raise _unauthorized("Invalid API key.", "invalid_api_key")


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, code=code, outcome="unauthorized", headers={"WWW-Authenticate": "Bearer"})
