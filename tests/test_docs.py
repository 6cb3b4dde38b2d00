"""The README and docs/ say what a reader can rely on: every link, path and command in them resolves in this repo.

Pure file reads: no services, no network, no git.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [README, *DOCS]

# Top-level folders of the project: a backticked path starting with one of them names a file or folder in the repo.
PROJECT_DIRS = {"agent", "bench", "deploy", "docs", "scripts", "stack", "tests", "token_server", "web", ".ci"}
# Made by scripts/setup or the tests, never committed.
GENERATED = {"web/dist", "web/node_modules"}
FILE_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".json", ".toml", ".png", ".ts", ".tsx", ".sh", ".lock")

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[(?:[^\]\n]|\n(?!\n))*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")
MODULE = re.compile(r"python -m ([A-Za-z_][\w.]*)")
# Environment variables of the system, not settings of this project.
SYSTEM_VARIABLES = {"PATH", "HOME", "TZ"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text without fenced code blocks."""
    return FENCE.sub("", text)


def links(doc: Path) -> list[str]:
    return LINK.findall(prose(doc.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in prose(doc.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def path_tokens(doc: Path) -> set[str]:
    """Repo paths a reader would copy: in inline code anywhere, and in fenced blocks (commands, the layout)."""
    text = doc.read_text()
    words = []
    for span in INLINE_CODE.findall(prose(text)):
        words += span.split()
    for block in FENCE.findall(text):
        words += block.split()
    found = set()
    for word in words:
        word = word.strip("()[]{},;:'\"")
        if "://" in word or word.startswith(("~", "$", "<", "/")):
            continue
        head = word.split("/", 1)[0]
        if "/" in word and head in PROJECT_DIRS:
            found.add(word.rstrip("."))
    return found


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail to docs/"


def test_readme_is_not_a_lab_notebook():
    """Dated runs and commits belong in docs/, not in the README."""
    text = README.read_text()
    dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", text)
    assert not dates, f"README.md holds dated runs {dates}: move them to docs/"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=rel)
def test_relative_links_resolve_inside_the_repo(doc: Path):
    problems = []
    for target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a web address (https:, mailto:), not a file
            assert not target.startswith("file:"), f"{rel(doc)} links to a local file outside the repo: {target}"
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if path_part.startswith("/") or not dest.is_relative_to(REPO):
            problems.append(f"{target} (outside the repo)")
        elif not dest.exists():
            problems.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target} (no heading #{anchor} in {rel(dest)})")
    assert not problems, f"{rel(doc)}: broken links: {problems}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=rel)
def test_named_repo_paths_exist(doc: Path):
    missing = sorted(
        word
        for word in path_tokens(doc)
        if not any(word == g or word.startswith(g + "/") for g in GENERATED) and not (REPO / word).exists()
    )
    assert not missing, f"{rel(doc)} names paths that are not in the repo: {missing}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=rel)
def test_named_files_exist(doc: Path):
    """A file named on its own (`livekit.yaml`, NOTICE.md) is at the repo root or beside the document."""
    text = doc.read_text()
    names = {span for span in INLINE_CODE.findall(prose(text)) if re.fullmatch(r"[\w.-]+", span)}
    names |= set(re.findall(r"(?<![\w/.-])([\w-]+\.md)\b", prose(text)))
    missing = sorted(
        name
        for name in names
        if name.endswith(FILE_SUFFIXES) and not (REPO / name).exists() and not (doc.parent / name).exists()
    )
    assert not missing, f"{rel(doc)} names files that are not in the repo: {missing}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=rel)
def test_python_modules_named_in_commands_exist(doc: Path):
    missing = []
    for module in set(MODULE.findall(doc.read_text())):
        base = REPO / module.replace(".", "/")
        if not (base.with_suffix(".py").exists() or (base / "__main__.py").exists()):
            missing.append(module)
    assert not missing, f"{rel(doc)} runs modules that do not exist: {sorted(missing)}"


def env_example_names() -> set[str]:
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^[ \t]*#?[ \t]*([A-Z][A-Z0-9_]+)=", text, re.M))


def setting_names(text: str) -> set[str]:
    """SETTING_NAMES anywhere, and one-word ones (`PERSONA`) in inline code."""
    names = set(ENV_NAME.findall(text))
    for span in INLINE_CODE.findall(prose(text)):
        word = span.split("=", 1)[0]
        if re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", word):
            names.add(word)
    return names - SYSTEM_VARIABLES


def test_readme_settings_are_in_env_example():
    named = setting_names(README.read_text())
    missing = sorted(named - env_example_names())
    assert not missing, f"README.md names settings that .env.example lacks: {missing}"


def test_env_example_settings_are_documented():
    documented = setting_names((REPO / "docs" / "configuration.md").read_text())
    missing = sorted(env_example_names() - documented)
    assert not missing, f".env.example has settings docs/configuration.md does not describe: {missing}"
