from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from runtime.logs import configure_logging, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("sasl.password=abc other=1", "sasl.password=*** other=1"),
        ("no secret here", "no secret here"),
    ],
)
def test_redact_masks_secrets(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_json_logs_are_one_object_per_line_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    try:
        logging.getLogger("sidestream.test").info(
            "connecting to %s", "postgresql://app:hunter2@db/x"
        )
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["level"] == "INFO"
        assert record["logger"] == "sidestream.test"
        assert "hunter2" not in line
        assert record["message"] == "connecting to postgresql://app:***@db/x"
    finally:
        logging.getLogger().handlers.clear()


def test_logs_follow_stderr_when_it_is_swapped_and_closed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A command run in-process (a test's CLI runner) configures logging while stderr is a
    # replacement it closes afterwards; later records must go to the stderr of their time.
    replacement = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replacement)
    configure_logging("INFO", "console")
    try:
        logging.getLogger("sidestream.test").info("while swapped")
        assert "while swapped" in replacement.getvalue()
        monkeypatch.undo()
        replacement.close()
        logging.getLogger("sidestream.test").info("after the swap")
        err = capsys.readouterr().err
        assert "Logging error" not in err
        assert "INFO    sidestream.test: after the swap" in err
    finally:
        logging.getLogger().handlers.clear()
