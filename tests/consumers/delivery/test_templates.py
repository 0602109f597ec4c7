"""Email templates: string.Template parts, HTML escaping, strict parameters."""

from __future__ import annotations

import pytest

from consumers.delivery import EmailTemplate, TemplateError, TemplateRegistry, default_templates


def test_built_in_templates_render_both_parts() -> None:
    registry = default_templates()
    assert {"welcome", "password_reset", "invoice_ready"} <= set(registry)
    rendered = registry.render("welcome", {"recipient": "a@b.test"})
    assert rendered.subject == "Welcome to Sidestream"
    assert "Hello a@b.test" in rendered.text
    assert rendered.html.startswith("<!doctype html>")
    assert "a@b.test" in rendered.html


def test_values_are_escaped_in_html_only() -> None:
    template = EmailTemplate(subject="Hi $who", text="x=$x", html="<p>$x</p>")
    rendered = template.render("t", {"who": "Bo\nb", "x": "<script>"})
    assert rendered.text == "x=<script>"
    assert rendered.html == "<p>&lt;script&gt;</p>"
    assert rendered.subject == "Hi Bo b"  # no line break in a header


def test_unknown_template_and_missing_parameter_are_errors() -> None:
    registry = TemplateRegistry()
    with pytest.raises(TemplateError, match="unknown template"):
        registry.render("nope", {})
    registry.register("t", EmailTemplate(subject="$a", text="$b", html="$a"))
    with pytest.raises(TemplateError, match="missing parameter 'b'"):
        registry.render("t", {"a": "1"})


def test_default_registries_are_independent() -> None:
    first = default_templates()
    first.register("extra", EmailTemplate(subject="s", text="t", html="h"))
    assert "extra" not in default_templates()


def test_invalid_placeholders_are_rejected_when_built() -> None:
    with pytest.raises(ValueError, match="invalid"):
        EmailTemplate(subject="$", text="t", html="h")
