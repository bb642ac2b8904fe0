"""References in the repository point to files a reader of the repository can open.

Every `docs/<file>.md#<section>` cited in code, tests, docs and README names an existing file and one of its
headings (GitHub's anchor form); links between the docs (`[..](model.md#bridge)`) likewise. Nothing cites a file
outside the repository (the notes the code was first written from are summarised in docs/ instead).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("movakit", "tests", "bench", "scripts", "services", "proto", "infra", "docs", ".ci")
TOP_FILES = ("README.md", "Makefile", "docker-compose.yml", "pyproject.toml")
SUFFIXES = {".py", ".md", ".proto", ".sh", ".yaml", ".yml", ".toml", ".txt", ""}
CITATION = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")
DOC_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)")
OUTSIDE = ("MOVA-" + "SPEC", "../" + "shared", "/work/" + "shared")  # split so this file does not match itself


def _text_files() -> list[Path]:
    files = [ROOT / name for name in TOP_FILES]
    for folder in SCANNED:
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts and not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))]
    return files


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in doc.read_text().splitlines() if line.startswith("#")}


def test_docs_citations_name_a_file_and_a_section():
    cited: list[tuple[str, str, str | None]] = []
    for path in _text_files():
        text = path.read_text(errors="replace")
        where = str(path.relative_to(ROOT))
        cited += [(where, m.group(1), m.group(2)) for m in CITATION.finditer(text)]
        if path.parent == ROOT / "docs":
            cited += [(where, m.group(1), m.group(2)) for m in DOC_LINK.finditer(text)]
    assert len(cited) > 40  # the model library cites docs/model.md, checkpoint.md and sampler.md throughout
    broken = []
    for where, name, section in cited:
        doc = ROOT / "docs" / name
        if not doc.is_file() or (section is not None and section not in _anchors(doc)):
            broken.append(f"{where}: docs/{name}#{section}")
    assert not broken, broken


def test_nothing_cites_a_file_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}: {marker}" for p in _text_files() for marker in OUTSIDE
            if marker in p.read_text(errors="replace")]
    assert not hits, hits
