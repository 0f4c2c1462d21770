"""The documentation names only things that exist.

README.md and every docs/**/*.md (guides, benchmark reports, results) are checked, prose and code blocks alike:

* every `python -m X` names a module of this repository (X.py or X/__main__.py), apart from a few
  standard tools (pytest, venv, pip);
* every repository path they name exists: root scripts and configs (`generate_data.py`,
  `submit_gemma_soo.sh`, `ds_config_stage3.json`, ...) and anything under the repository's own
  folders (`soo/`, `scripts/`, `configs/`, `test/`, `docs/`, `benchmarks/`; globs such as
  `configs/*.yaml` must match something). Paths a run writes (outputs/, results/, data/, logs/,
  /tmp, ...) and bare output file names (`report.md`, `results.json`) are not checked;
* every relative markdown link resolves to a file (relative to the markdown file), and its
  `#anchor`, if any, to a heading of the target;
* the README stays a front door: at most 260 lines.

Offline and fast: it only reads files.
"""

from __future__ import annotations

import glob
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 260

# Modules run with `python -m` that are not part of this repository.
EXTERNAL_MODULES = {"pytest", "venv", "pip"}
# Top-level folders of the repository: a path starting with one of them must exist.
REPO_DIRS = ("soo", "scripts", "configs", "test", "docs", "benchmarks", ".ci")
# Bare file names (no folder) that are repository files at the root when they have these endings;
# other bare names (report.md, results.json, trainer_state.json, ...) are files a run writes.
ROOT_FILE_SUFFIXES = (".py", ".sh")
ROOT_FILE_PATTERNS = (r"ds_config\w*\.json", r"requirements\.txt", r"pytest\.ini", r"README\.md")

MODULE_RE = re.compile(r"\bpython3?\s+(?:-[A-Za-z]+\s+)*-m\s+([A-Za-z_][\w.]*)")
LINK_RE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REPO_PATH_RE = re.compile(r"(?<![\w./~$%-])((?:" + "|".join(re.escape(d) for d in REPO_DIRS) + r")/[\w.*/-]*)")
BARE_FILE_RE = re.compile(r"(?<![\w./~$%-])([\w-]+\.(?:py|sh|json|txt|ini|md))(?![\w/-])")
URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _doc_id(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _text_without_urls(text: str) -> str:
    return URL_RE.sub(" ", text)


def _lines(path: Path):
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)


def module_exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


def repo_path_exists(reference: str) -> bool:
    reference = reference.rstrip(".,:;")
    if any(ch in reference for ch in "*?["):
        return bool(glob.glob(str(ROOT / reference)))
    return (ROOT / reference).exists()


def missing_modules(path: Path) -> list[str]:
    missing = []
    for number, line in _lines(path):
        for module in MODULE_RE.findall(line):
            module = module.rstrip(".")
            if module.split(".")[0] in EXTERNAL_MODULES:
                continue
            if not module_exists(module):
                missing.append(f"{_doc_id(path)}:{number}: `python -m {module}`: no module {module} in the repository")
    return missing


def missing_paths(path: Path) -> list[str]:
    missing = []
    for number, line in _lines(path):
        text = _text_without_urls(line)
        # Markdown link targets are checked by test_markdown_links, relative to the file.
        text = LINK_RE.sub(lambda m: m.group(0).replace(m.group(1), " "), text)
        for reference in REPO_PATH_RE.findall(text):
            reference = reference.rstrip(".,:;")
            if not repo_path_exists(reference):
                missing.append(f"{_doc_id(path)}:{number}: `{reference}` does not exist")
        for name in BARE_FILE_RE.findall(text):
            is_root_file = name.endswith(ROOT_FILE_SUFFIXES) or any(
                re.fullmatch(pattern, name) for pattern in ROOT_FILE_PATTERNS
            )
            if name in ("__init__.py", "__main__.py"):
                continue
            if is_root_file and not (ROOT / name).is_file():
                missing.append(f"{_doc_id(path)}:{number}: `{name}` is not a file at the repository root")
    return missing


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (without the -1, -2 suffixes of repeated headings)."""
    text = re.sub(r"`|\*\*|\*|_{2}", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for _, line in _lines(path):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            seen = counts.get(slug, 0)
            found.add(slug if seen == 0 else f"{slug}-{seen}")
            counts[slug] = seen + 1
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for number, line in _lines(path):
        for target in LINK_RE.findall(line):
            if URL_RE.match(target) or target.startswith("mailto:"):
                continue
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            where = f"{_doc_id(path)}:{number}: link ({target})"
            if not destination.exists():
                broken.append(f"{where}: {file_part} does not exist")
            elif anchor and destination.suffix == ".md" and anchor.lower() not in anchors(destination):
                broken.append(f"{where}: no heading with anchor #{anchor} in {destination.relative_to(ROOT)}")
    return broken


DOCS = doc_files()
DOC_IDS = [_doc_id(path) for path in DOCS]


def test_docs_exist():
    assert (ROOT / "README.md").is_file()
    assert len(DOCS) > 1, "no docs/*.md found"


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_python_m_modules_exist(path):
    missing = missing_modules(path)
    assert not missing, "modules named with python -m that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_repository_paths_exist(path):
    missing = missing_paths(path)
    assert not missing, "repository paths that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", DOCS, ids=DOC_IDS)
def test_markdown_links(path):
    broken = broken_links(path)
    assert not broken, "broken markdown links:\n" + "\n".join(broken)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail into docs/"
    )


def test_readme_states_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in ("bash scripts/test.sh", "bash scripts/demo.sh"):
        assert command in text, f"README.md does not give `{command}`"
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8"), (
        "the README's test command is not what .ci/run runs"
    )


def test_checker_catches_bogus_references(tmp_path):
    """The checks themselves fail on references to things that do not exist."""
    bogus = tmp_path / "bogus.md"
    bogus.write_text(
        "Run `python -m soo.tools.nonexistent` and `bash scripts/nonexistent.sh`,\n"
        "see `soo/train/nonexistent.py`, `nonexistent_root_script.py` and [x](missing.md).\n"
        "Outputs such as `outputs/x/report.md`, `results.json` and `/tmp/run` are not checked;\n"
        "`python -m soo.tools.memory`, `configs/*.yaml` and `docs/` exist.\n",
        encoding="utf-8",
    )
    assert len(missing_modules(bogus)) == 1
    assert len(missing_paths(bogus)) == 3
    assert len(broken_links(bogus)) == 1
