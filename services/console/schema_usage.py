"""The Schemas page's model: subjects, versions and rules from the repository's catalog,
a side-by-side diff of two versions, and which versions the records on a topic were
written with lately (read from the framing of the last records of each partition)."""

from __future__ import annotations

import contextlib
import difflib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from consumers.ops import TopicReader
from schemas import SchemaCatalog, SchemaError
from schemas.compatibility import load_rules
from schemas.topics import TopicsFileError, topic_for
from schemas.wire import parse_framing
from services.console.pipelines import Pipeline

__all__ = ["SubjectInfo", "VersionUsage", "diff_table", "subjects", "topics_of", "versions_on"]


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    subject: str
    versions: tuple[int, ...]
    rule: str
    full_name: str


def subjects(catalog: SchemaCatalog) -> list[SubjectInfo]:
    """Every subject with its versions and its compatibility rule."""
    default, rules = load_rules()
    return [
        SubjectInfo(
            subject,
            tuple(v.version for v in catalog.versions(subject)),
            rules.get(subject, default),
            catalog.current(subject).full_name,
        )
        for subject in catalog.subjects
    ]


def topics_of(subject: str, pipelines: Iterable[Pipeline]) -> list[str]:
    """The topics that carry ``subject``: the pipelines' own, then topics.yaml's."""
    found = [t for p in pipelines if p.subject == subject for t in p.topics]
    with contextlib.suppress(TopicsFileError):  # a subject no topic carries (yet)
        found.append(topic_for(subject))
    return list(dict.fromkeys(found))


def diff_table(catalog: SchemaCatalog, subject: str, old: int, new: int) -> str:
    """An HTML table: version ``old`` beside version ``new`` (pretty JSON, changes marked).

    Raises:
        SchemaError: an unknown subject or version.
    """
    versions = {v.version: v for v in catalog.versions(subject)}
    for number in (old, new):
        if number not in versions:
            raise SchemaError(f"{subject} has no version {number}; it has {sorted(versions)}")
    left = json.dumps(versions[old].schema, indent=2).splitlines()
    right = json.dumps(versions[new].schema, indent=2).splitlines()
    # HtmlDiff escapes the text itself; the table is inserted as it is.
    return difflib.HtmlDiff(tabsize=2, wrapcolumn=70).make_table(
        left, right, f"v{old}", f"v{new}", context=False
    )


@dataclass(frozen=True, slots=True)
class VersionUsage:
    """Writer versions among the last records of one topic."""

    topic: str
    sampled: int
    versions: dict[str, int]  # "v2" / "schema id 7" / "unknown fingerprint" / "undecodable"
    error: str | None = None


def versions_on(
    reader: TopicReader, catalog: SchemaCatalog, topic: str, *, per_partition: int = 200
) -> VersionUsage:
    """Which schema versions wrote the last ``per_partition`` records of each partition."""
    keys = [(topic, p) for p in reader.partitions(topic)]
    ends = reader.ends(keys)
    ranges = {key: (max(e.low, e.end - per_partition), e.end) for key, e in ends.items()}
    seen: Counter[str] = Counter()
    sampled = 0
    for message in reader.scan(ranges):
        sampled += 1
        seen[_writer(catalog, message.value() or b"")] += 1
    return VersionUsage(topic, sampled, dict(seen.most_common()))


def _writer(catalog: SchemaCatalog, value: bytes) -> str:
    try:
        framing = parse_framing(value)
    except SchemaError:
        return "undecodable"
    if framing.fingerprint is None:
        return f"schema id {framing.schema_id}"
    found = catalog.by_fingerprint(framing.fingerprint)
    return f"{found.subject} v{found.version}" if found else "unknown fingerprint"
