"""The documentation keeps up with the code: every setting is documented, the README stays a
start page, and no relative link points nowhere. File reads only: no database, no server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from backend.core.config import Settings
from tests.support import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCED = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def env_names(name: str, field: FieldInfo) -> list[str]:
    """The environment variables pydantic-settings reads for a field (aliases included)."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [c.upper() for c in alias.choices if isinstance(c, str)]
    if field.alias:
        return [field.alias.upper()]
    return [(Settings.model_config.get("env_prefix", "") + name).upper()]


def prose(text: str) -> str:
    """Markdown without code blocks and code spans, where `[x](y)` is not a link."""
    return INLINE_CODE.sub("", FENCED.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def relative_links(markdown: str) -> list[str]:
    """The targets of links and images that are not URLs (`http:`, `mailto:`, `//host`)."""
    return [
        target
        for target in LINK.findall(prose(markdown))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("//")
    ]


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    names = {
        env: name for name, field in Settings.model_fields.items() for env in env_names(name, field)
    }
    assert len(names) >= 50  # the fields were found
    missing = sorted(env for env in names if f"`{env}`" not in page)
    assert not missing, f"docs/configuration.md does not mention {missing}"


def test_readme_is_a_start_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(page: Path) -> None:
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            anchors = {
                slug(h) for h in HEADING.findall(prose(resolved.read_text(encoding="utf-8")))
            }
            if anchor not in anchors:
                broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files or headings: {broken}"


def test_the_link_check_sees_links_and_only_links() -> None:
    """So that a parser change cannot make the link test pass by finding nothing."""
    markdown = (
        "See [a](a.md#part) and ![pic](img/p.png), not `[b](b.md)`, [web](https://x.org),\n"
        "[mail](mailto:x@y.z) or [abs](//cdn.x/y.js).\n```ts\nconst y = [c](z.md);\n```\n[top](#top)\n"
    )
    assert relative_links(markdown) == ["a.md#part", "img/p.png", "#top"]
    assert "docs/configuration.md" in relative_links(README.read_text(encoding="utf-8"))
    assert slug("7. Running both locally") == "7-running-both-locally"
    assert slug("The `jwks` table, [linked](x.md)") == "the-jwks-table-linked"
