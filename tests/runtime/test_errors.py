"""Every error tree hangs under one root, and the roots keep the bases callers rely on."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from runtime.errors import SidestreamError

_PACKAGES = ("runtime", "schemas", "producers", "consumers", "services", "devtools")


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        modules = [package_name] + [
            info.name
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
            if ".scenarios" not in info.name and not info.name.endswith("_bench")
        ]
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # a developer module whose optional dependency is absent
                continue
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, Exception)
                    and value.__module__ == module_name
                    and not name.startswith("_")
                ):
                    found[f"{module_name}.{name}"] = value
    return [found[key] for key in sorted(found)]


@pytest.mark.parametrize("error", _error_classes(), ids=lambda e: e.__qualname__)
def test_every_package_error_is_a_sidestream_error(error: type[BaseException]) -> None:
    assert issubclass(error, SidestreamError), f"{error.__module__}.{error.__qualname__}"


def test_the_trees_keep_the_bases_callers_catch() -> None:
    from consumers.dead_letters import DeadLetterError
    from consumers.errors import ConsumerError
    from consumers.offsets import Fenced
    from runtime.migrations import MigrationError
    from schemas.errors import SchemaError
    from schemas.topics import TopicsFileError
    from services.errors import InvalidationTimeoutError, InvalidationUnavailableError

    assert issubclass(TopicsFileError, ValueError)
    assert issubclass(TopicsFileError, SchemaError)
    assert issubclass(Fenced, ConsumerError)
    assert issubclass(DeadLetterError, ConsumerError)
    assert issubclass(MigrationError, SidestreamError)
    assert issubclass(InvalidationUnavailableError, ConnectionError)
    assert issubclass(InvalidationTimeoutError, TimeoutError)
