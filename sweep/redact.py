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

# scheme://user:password@host  -- the password ends at the LAST '@' before the host, as URL
# parsers read it (a raw '@' in a password: 'u:p@ss@host' is user u, password p@ss, host host).
# So the password is everything up to an '@' whose host part (up to / ? # or a space) has no
# '@'; it may hold '/' too (masked whole rather than cut), never another URL's '://'.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*)"
                       r":(?P<password>(?:(?!://)\S)*)@(?=[^@\s/?#]*(?:[\s/?#]|$))")
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


def raw_at_in_password(url: str) -> bool:
    """True if the password of `url` holds a raw '@' (SQLAlchemy ends the password at the first '@')."""
    m = _USERINFO.match(url)
    return m is not None and "@" in m["password"]


def has_mask(url: str) -> bool:
    """True if `url` was masked (it can no longer be used to connect)."""
    return f":{MASK}@" in url or f"={MASK}" in url


class MaskingFormatter(logging.Formatter):
    """Log lines with every URL password and secret environment value masked.

    `inner`: the handler's own formatter, which formats the line (kept whole: Optuna's
    colorlog formatter needs the `log_color` field it adds itself); None: `fmt` here.
    """

    def __init__(self, fmt: str | None = None, *, inner: logging.Formatter | None = None) -> None:
        super().__init__(fmt)
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(self.inner.format(record) if self.inner is not None else super().format(record))


_FORMAT = "%(levelname)s %(name)s: %(message)s"


def install_log_masking() -> None:
    """Mask secrets in every log line this process prints (root and MLflow's own handlers).

    Also quiets urllib3's "Retrying ..." warning, printed once per HTTP retry:
    the tracker reports an outage in one line of its own (sweep.tracking.outage).
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
                # Wrapped, not rebuilt from its format string: a colorlog format rebuilt as a
                # plain Formatter fails on every line (KeyError 'log_color', a logging error).
                h.setFormatter(MaskingFormatter(_FORMAT, inner=h.formatter))
