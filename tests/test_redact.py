"""Passwords out of URLs and text (sweep.redact): the function every recorded or printed URL goes through."""

from __future__ import annotations

import logging

import pytest

from sweep.redact import MaskingFormatter, mask_text, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg2://optuna:s3cr:et@db:5432/optuna", "postgresql+psycopg2://optuna:***@db:5432/optuna"),
        ("http://user:token@host:5000", "http://user:***@host:5000"),
        ("https://user:p%40ss@host/path?x=1", "https://user:***@host/path?x=1"),
        ("mysql://root:@db/x", "mysql://root:@db/x"),  # no password: nothing to hide
        # A raw '@' in the password: masked up to the LAST '@' before the host, as URL parsers read it.
        ("postgresql://u:p@ss@db:5432/optuna", "postgresql://u:***@db:5432/optuna"),
        ("http://u:a@b/c@host:5000/x?k=v", "http://u:***@host:5000/x?k=v"),
        ("postgresql://db/optuna?password=hunter2&sslmode=require", "postgresql://db/optuna?password=***&sslmode=require"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("journal:/w/optuna.journal", "journal:/w/optuna.journal"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_mask_url_hides_the_password_and_keeps_the_rest(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_text_masks_every_url_in_a_message_and_secret_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123456")
    text = "cannot reach http://u:pw1@a:1 nor postgresql://v:pw2@b/db; header Bearer tok-123456"
    out = mask_text(text)
    assert "pw1" not in out and "pw2" not in out and "tok-123456" not in out
    assert "http://u:***@a:1" in out and "postgresql://v:***@b/db" in out


def test_log_lines_are_masked() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "failed at %s", ("http://u:pw9@h",), None)
    assert "pw9" not in MaskingFormatter("%(message)s").format(record)
