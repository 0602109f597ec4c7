"""The Schemas page: subjects with versions and rules, the versions seen on a topic, and
a side-by-side diff of two versions."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.consumers.support import produce
from tests.services.console.conftest import ConsoleEnv
from tests.support.events import audit_event


def test_subjects_rules_and_the_versions_recently_on_a_topic(
    console_env: ConsoleEnv, reader: TestClient
) -> None:
    produce(console_env.settings, console_env.topic, [audit_event(i) for i in range(25)])
    produce(console_env.settings, console_env.topic, [b"junk"])
    page = reader.get("/schemas")
    assert page.status_code == 200
    row = re.search(r'<tr data-subject="audit_event">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert "FULL_TRANSITIVE" in row.group(1)
    assert console_env.topic in row.group(1)
    assert "audit_event v1: 25" in row.group(1)
    assert "undecodable: 1" in row.group(1)
    assert "BACKWARD_TRANSITIVE" in page.text  # the other subjects' default rule


def test_a_side_by_side_diff_of_two_versions(console_env: ConsoleEnv, reader: TestClient) -> None:
    diff = reader.get("/schemas/analytics_event", params={"old": 1, "new": 2})
    assert diff.status_code == 200
    assert "v1 ↔ v2" in diff.text
    added = re.findall(r'<span class="diff_add">(.*?)</span>', diff.text, re.S)
    assert any("platform" in chunk for chunk in added)  # the field v2 added
    missing = reader.get("/schemas/analytics_event", params={"old": 1, "new": 9})
    assert "has no version 9" in missing.text
    unknown = reader.get("/schemas/nope")
    assert "unknown subject" in unknown.text
