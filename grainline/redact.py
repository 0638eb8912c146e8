"""Keep credentials out of everything grainline records: the ledger, Prefect artifacts,
log lines and CLI output.

Object-store credentials belong in the environment (``AWS_SECRET_ACCESS_KEY``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_KEY``, ...) or a Prefect
block, where LanceDB reads them. A URI that carries a password is refused at the
boundary (:func:`check_uri`); everything written out also goes through
:func:`redact_text`, as a second line of defence."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "check_uri", "has_credentials", "redact_options", "redact_text", "redact_uri", "redact_value"]

MASK = "***"

# Option names / query parameters whose values are secrets. "key" alone is enough:
# access_key_id, account_key, sas_key ... are all better hidden than shown.
_SECRET_NAME = re.compile(r"secret|passw|token|key|credential|signature|^sig$|sas|session|auth", re.IGNORECASE)
# scheme://userinfo@ : "user:password@" (an AWS secret key may hold unescaped '/'),
# or a lone "token@".
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s@:]*:[^\s@]*|[^/?#\s@:]+)@")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#\s'\"]*)")
# Azure's abfs://container@account... uses userinfo for the container name, not a secret.
_USERINFO_IS_NAME = ("az://", "abfs://", "abfss://", "adl://", "azure://")


def _userinfo_secret(scheme: str, userinfo: str) -> bool:
    return ":" in userinfo or scheme.lower() not in _USERINFO_IS_NAME


def has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries a password/token in its userinfo or a secret-looking
    query parameter."""
    for m in _USERINFO.finditer(uri):
        if _userinfo_secret(m["scheme"], m["userinfo"]):
            return True
    return "://" in uri and any(_SECRET_NAME.search(m["name"]) for m in _QUERY_PARAM.finditer(uri))


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URI in it, and secret-looking query
    parameter values, replaced by ``***``."""

    def userinfo(m: re.Match[str]) -> str:
        return f"{m['scheme']}{MASK}@" if _userinfo_secret(m["scheme"], m["userinfo"]) else m[0]

    def query(m: re.Match[str]) -> str:
        return f"{m['sep']}{m['name']}={MASK}" if _SECRET_NAME.search(m["name"]) else m[0]

    text = _USERINFO.sub(userinfo, text)
    return _QUERY_PARAM.sub(query, text) if "://" in text else text


def redact_uri(uri: str) -> str:
    """A URI safe to show: ``s3://KEY:SECRET@bucket/db`` -> ``s3://***@bucket/db``."""
    return redact_text(uri)


def redact_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Storage options safe to show: values of secret-looking keys become ``***``,
    other values are redacted as text (an endpoint URL may carry userinfo)."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        out[k] = MASK if _SECRET_NAME.search(str(k)) else (redact_text(v) if isinstance(v, str) else v)
    return out


def redact_value(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists) redacted as text."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def check_uri(uri: str, what: str = "db") -> str:
    """Refuse a URI with credentials in it (they would end up in Prefect's flow-run
    parameters and the ledger); the error shows the URI redacted."""
    if has_credentials(uri):
        raise ValueError(
            f"{what} URI {redact_uri(uri)!r} carries credentials; pass them in the environment instead "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, ...)"
        )
    return uri
