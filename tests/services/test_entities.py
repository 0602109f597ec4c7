"""Cache key names shared by the API and the invalidation consumer."""

from __future__ import annotations

import pytest

from services import collection_of, item_key


def test_item_keys_and_collections() -> None:
    assert item_key("acme", "project", "0193-ab") == "project/acme/0193-ab"
    assert collection_of("project") == "project"


@pytest.mark.parametrize(
    ("tenant", "entity_type", "entity_id"),
    [
        ("a:b", "project", "1"),
        ("acme", "pro ject", "1"),
        ("", "project", "1"),
        ("acme", "project", ""),
        ("acme", "project", "a b"),
        ("x" * 65, "project", "1"),
    ],
)
def test_names_that_could_collide_are_refused(
    tenant: str, entity_type: str, entity_id: str
) -> None:
    with pytest.raises(ValueError, match="must be"):
        item_key(tenant, entity_type, entity_id)
