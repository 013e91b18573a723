"""Optional API keys: with `API_KEYS` set, `/v1/*` and `/metrics` need `Authorization: Bearer <key>`.
`ADMIN_API_KEYS` are valid keys too (they also read every user's results, see results/access.py).

Keys are compared in constant time and never logged (neither the configured ones nor what a client sent).
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from messages import Lang

from .errors import APIError, sentence


class APIKeys:
    def __init__(self, secret: SecretStr | None, admin: SecretStr | None = None):
        # Admin keys are accepted where keys are required; they do not turn the requirement on.
        raw = ",".join(s.get_secret_value() for s in (secret, admin) if s) if secret else ""
        self._keys = [key.strip().encode() for key in raw.split(",") if key.strip()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None, lang: Lang = "en") -> None:
        """Raise a 401 APIError (in `lang`) unless keys are off or the header carries one of them."""
        if not self._keys:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("missing_api_key", lang)
        sent = token.strip().encode()
        # compare_digest with every key, no early exit, so timing says nothing about which key is close.
        matches = [hmac.compare_digest(sent, key) for key in self._keys]
        if not any(matches):
            raise unauthorized("invalid_api_key", lang)


def unauthorized(code: str, lang: Lang) -> APIError:
    """401 with the catalogue's message for `code` (missing_api_key, invalid_api_key, no_owner)."""
    return APIError(
        401, sentence(code, lang), code=code, outcome="unauthorized", headers={"WWW-Authenticate": "Bearer"}
    )
