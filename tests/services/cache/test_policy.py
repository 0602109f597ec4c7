"""Pure logic: TTL jitter, XFetch, entry encoding, key names, pub/sub messages."""

from __future__ import annotations

import pytest

from services.cache import NotFound, Versioned
from services.cache.entry import HEADER_SIZE, Entry, Kind, decode_entry, encode_value
from services.cache.keys import Keys
from services.cache.policy import jittered_ttl_ms, should_recompute_early
from services.cache.tombstones import decode_message, encode_message


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.75, 0.999999])
def test_jitter_stays_within_the_fraction(draw: float) -> None:
    ttl_ms = jittered_ttl_ms(60, 0.1, draw)
    assert 54_000 <= ttl_ms <= 66_000


def test_jitter_spans_the_whole_range_and_zero_jitter_is_exact() -> None:
    assert jittered_ttl_ms(10, 0.1, 0.0) == 9_000
    assert jittered_ttl_ms(10, 0.1, 0.5) == 10_000
    assert jittered_ttl_ms(10, 0.1, 0.999999) == 11_000
    assert jittered_ttl_ms(10, 0.0, 0.123) == 10_000
    assert jittered_ttl_ms(0.0001, 0.5, 0.0) == 1  # never 0: PX 0 is an error


@pytest.mark.parametrize(("ttl", "jitter"), [(0, 0.1), (-1, 0.1), (1, 1.0), (1, -0.1)])
def test_jitter_rejects_nonsense(ttl: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        jittered_ttl_ms(ttl, jitter, 0.5)


def test_xfetch_recomputes_early_when_the_exponential_gap_reaches_the_expiry() -> None:
    # -ln(0.5) = 0.693: a 1 s load with beta 1 reaches 693 ms ahead.
    def early(now_ms: int, beta: float) -> bool:
        return should_recompute_early(
            now_ms=now_ms, delta_ms=1_000, expiry_ms=100_000, beta=beta, draw=0.5
        )

    assert early(99_400, 1.0)
    assert not early(99_200, 1.0)
    # A larger beta reaches further ahead; a luckier draw (near 1) hardly at all.
    assert early(90_000, 20.0)
    assert not should_recompute_early(
        now_ms=99_990, delta_ms=1_000, expiry_ms=100_000, beta=1.0, draw=0.999999
    )


def test_xfetch_with_beta_zero_never_recomputes_before_expiry() -> None:
    for draw in (1e-300, 0.0, 0.5):
        assert not should_recompute_early(
            now_ms=99_999, delta_ms=10_000, expiry_ms=100_000, beta=0.0, draw=draw
        )
    # An entry already past its logical expiry is not "early": it is due.
    assert should_recompute_early(
        now_ms=100_000, delta_ms=10_000, expiry_ms=100_000, beta=0.0, draw=0.5
    )


def test_xfetch_survives_a_zero_draw_and_rejects_negative_beta() -> None:
    # log(0) would be -inf (always recompute, however far the expiry): clamped to the
    # smallest double, -ln of which is about 744, so a zero draw is merely "very eager".
    assert should_recompute_early(now_ms=0, delta_ms=1, expiry_ms=700, beta=1.0, draw=0.0)
    assert not should_recompute_early(now_ms=0, delta_ms=1, expiry_ms=800, beta=1.0, draw=0.0)
    with pytest.raises(ValueError, match="beta"):
        should_recompute_early(now_ms=0, delta_ms=1, expiry_ms=1, beta=-1.0, draw=0.5)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"\x00\xffraw", Kind.BYTES),
        ("héllo", Kind.TEXT),
        ({"id": 7, "tags": ["a", "b"], "price": 1.5, "none": None}, Kind.JSON),
        ([1, 2, 3], Kind.JSON),
        (42, Kind.JSON),
    ],
)
def test_entries_round_trip_through_the_binary_header(value: object, kind: Kind) -> None:
    encoded_kind, payload = encode_value(value)
    assert encoded_kind is kind
    entry = Entry(kind, 2**64 - 1, 1234, 1_700_000_000_000, payload)
    blob = entry.encode()
    assert len(blob) == HEADER_SIZE + len(payload)
    decoded = decode_entry(blob)
    assert decoded == entry
    assert decoded is not None
    assert decoded.result() == Versioned(value, 2**64 - 1)


def test_json_values_are_compact_and_each_result_is_a_fresh_object() -> None:
    _, payload = encode_value({"a": [1, 2]})
    assert payload == b'{"a":[1,2]}'
    entry = Entry(Kind.JSON, 1, 0, 0, payload)
    first, second = entry.result(), entry.result()
    assert first is not None
    assert second is not None
    first.value["a"].append(3)
    assert second.value == {"a": [1, 2]}


def test_unreadable_blobs_are_misses_and_unencodable_values_are_rejected() -> None:
    assert decode_entry(None) is None
    assert decode_entry(b"plain old string") is None
    assert decode_entry(b"\x02" + bytes(30)) is None  # another format
    assert decode_entry(b"\x01\x09" + bytes(20)) is None  # unknown kind
    with pytest.raises(TypeError, match="JSON"):
        encode_value(object())
    with pytest.raises(TypeError, match="JSON"):
        encode_value(float("nan"))


def test_versions_must_be_unsigned_64_bit_ints() -> None:
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="version"):
            Versioned("x", bad)
    with pytest.raises(TypeError, match="int"):
        Versioned("x", True)
    with pytest.raises(TypeError, match="int"):
        NotFound(1.5)  # type: ignore[arg-type]


def test_key_kinds_never_collide() -> None:
    keys = Keys("svc:users")
    assert keys.entry("42") == "svc:users:e:42"
    assert keys.channel == "svc:users:invalidations"
    # A caller's key that looks like a lock is still an entry, and locks live apart.
    assert keys.lock(keys.entry("42")) == "svc:users:lock:e:42"
    assert keys.lock(keys.entry("42")) not in {keys.entry("42:lock"), keys.entry("lock:e:42")}
    assert keys.generation("acme", "orders") == "svc:users:g:acme:orders"
    assert keys.list_entry("acme", "orders", 7, "page=1") == "svc:users:l:acme:orders:7:page=1"


@pytest.mark.parametrize(
    ("tenant", "collection"), [("a:b", "c"), ("a", "b:c"), ("", "c"), ("a b", "c")]
)
def test_tenant_and_collection_names_are_validated(tenant: str, collection: str) -> None:
    with pytest.raises(ValueError, match=r"tenant|collection"):
        Keys("ns").generation(tenant, collection)


def test_namespace_and_key_are_validated() -> None:
    for bad in ("", "a b", "x" * 201):
        with pytest.raises(ValueError, match="namespace"):
            Keys(bad)
    with pytest.raises(ValueError, match="key"):
        Keys("ns").entry("")


def test_invalidation_messages_round_trip_keys_with_spaces_and_colons() -> None:
    for key in ("42", "user:42", "a key with spaces", "ü"):
        assert decode_message(encode_message(key, 2**63)) == (key, 2**63)
    for bad in (b"", b"42", b"x y", b"-1 y", b"12 "):
        with pytest.raises(ValueError, match="invalidation"):
            decode_message(bad)
