"""Passwords out of everything a sweep records or prints.

A storage URL (``postgresql+psycopg2://user:PASSWORD@host/db``) or a tracking
URI (``https://user:TOKEN@host``) may carry a secret. Everywhere one is
recorded (MLflow params, tags, run names), printed (progress, summary,
errors) or logged, it goes through `mask_url` / `mask_text` first, which
replace the password with ``***`` and keep the rest readable.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"
# Environment variables whose values are secrets (MLflow's HTTP auth).
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_CLIENT_CERT_PATH")

# scheme://user:password@  -- the password ends at the last '@' before the host.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")
# A query parameter named like a secret: ?password=..., &token=...
_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|access_token|secret)=)(?P<value>[^&\s'\"]*)",
                    re.IGNORECASE)


def mask_url(url: str | None) -> str | None:
    """`url` with its password (userinfo after ':') and secret query values replaced by ***.

    >>> mask_url("postgresql+psycopg2://optuna:s3cret@db:5432/optuna")
    'postgresql+psycopg2://optuna:***@db:5432/optuna'
    >>> mask_url("http://user:token@host:5000")
    'http://user:***@host:5000'
    >>> mask_url("sqlite:///mlflow.db")
    'sqlite:///mlflow.db'
    """
    if url is None:
        return None
    return mask_text(url)


def mask_text(text: str) -> str:
    """Every URL password, secret query value and secret environment value in `text`, masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["password"] else m[0], text)
    text = _QUERY.sub(lambda m: f"{m['key']}{MASK}" if m["value"] else m[0], text)
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:  # a 1-3 character value would mask ordinary words
            text = text.replace(value, MASK)
    return text


def has_mask(url: str) -> bool:
    """True if `url` was masked (it can no longer be used to connect)."""
    return f":{MASK}@" in url or f"={MASK}" in url


class MaskingFormatter(logging.Formatter):
    """Log lines with every URL password and secret environment value masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


_FORMAT = "%(levelname)s %(name)s: %(message)s"


def install_log_masking() -> None:
    """Mask secrets in every log line this process prints (root and MLflow's own handlers).

    Also quiets urllib3's "Retrying ..." warning, printed once per HTTP retry:
    the tracker reports an outage in one line of its own (sweep.outage).
    Call again after importing MLflow, which installs its own handler.
    """
    root = logging.getLogger()
    if not any(isinstance(h.formatter, MaskingFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(MaskingFormatter(_FORMAT))
        root.addHandler(handler)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    for name in ("mlflow", "alembic", "optuna"):
        for h in logging.getLogger(name).handlers:
            if not isinstance(h.formatter, MaskingFormatter):
                fmt = h.formatter._fmt if h.formatter is not None and h.formatter._fmt else _FORMAT
                # Optuna's colorlog format names fields only colorlog's formatter fills: a plain
                # Formatter raised KeyError 'log_color' and printed "--- Logging error ---" pages.
                fmt = re.sub(r"%\((?:log_color|reset)\)s", "", fmt)
                h.setFormatter(MaskingFormatter(fmt))
