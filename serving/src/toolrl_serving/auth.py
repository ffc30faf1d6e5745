"""Optional Bearer API keys, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi.security import HTTPAuthorizationCredentials

from toolrl_serving.errors import APIError


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """True when `given` equals one of `keys`. Every key is compared (no early exit), each in constant time."""
    given_b = given.encode("utf-8", "surrogatepass")
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(given_b, k.encode("utf-8"))
    return ok


def check_credentials(credentials: HTTPAuthorizationCredentials | None, keys: tuple[str, ...]) -> None:
    """Raise a 401 in OpenAI's shape unless the request carries an accepted key (no keys: everyone passes)."""
    if not keys:
        return
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise APIError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                       type="authentication_error", code="missing_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
    if not key_matches(credentials.credentials, keys):
        raise APIError(401, "incorrect API key provided", type="authentication_error", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})
