"""The documentation site builds in strict mode, and the examples it shows run and print what it says.

Examples in docs/*.md come in two kinds of fenced block:
- ```pycon blocks (`>>>` prompts) are one interactive session per page: they run in order, share
  their names, and their output must match what the page shows (doctest, with `...` matching
  anything and whitespace normalised);
- ```python blocks are whole scripts: each runs on its own and must not raise (a script that needs
  qm-qua is left out when qm-qua is not installed).
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
EXAMPLE_PAGES = [p for p in PAGES
                 if re.search(r"^```(python|pycon)\b", p.read_text(encoding="utf-8"), re.M)]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
BUILD_TIMEOUT = 240  # seconds; the build takes a few seconds


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_site_builds_in_strict_mode(tmp_path: Path) -> None:
    if not (_has("mkdocs") and _has("material")):
        pytest.skip("mkdocs-material is not installed (extra 'docs')")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    for page in PAGES:  # with directory URLs, docs/a/b.md becomes a/b/index.html
        rel = page.relative_to(DOCS).with_suffix("")
        html = site / (rel.parent if rel.name == "index" else rel) / "index.html"
        assert html.is_file(), f"{page.relative_to(DOCS)} was not rendered"


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, first line of the code, 0-based) of every fenced block."""
    return [(m["lang"], m["code"], text.count("\n", 0, m.start("code"))) for m in FENCE.finditer(text)]


def _session(text: str) -> str:
    """The page with everything but its pycon blocks blanked, so doctest reports the page's lines."""
    lines = [""] * (text.count("\n") + 1)
    for lang, code, first in _blocks(text):
        if lang == "pycon":
            for i, line in enumerate(code.splitlines()):
                lines[first + i] = line
    return "\n".join(lines)


def _needs_missing_module(code: str) -> bool:
    """True for a script that needs qm-qua (extra 'test') when it is not installed."""
    uses = ("reference_streams_manager", "StandInQop", "QuantumMachinesManager", "from qm import",
            "import qm\n")
    return any(word in code for word in uses) and not _has("qm")


@pytest.mark.parametrize("page", EXAMPLE_PAGES,
                         ids=[p.relative_to(DOCS).as_posix() for p in EXAMPLE_PAGES])
def test_examples_run_and_print_what_the_page_shows(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for lang, code, first in _blocks(text):
        if lang == "python" and not _needs_missing_module(code):
            namespace = {"__name__": f"docs_{page.stem}_script"}
            exec(compile(code, f"{page.name}, script at line {first + 1}", "exec"), namespace)  # noqa: S102

    session = _session(text)
    test = doctest.DocTestParser().get_doctest(session, {"__name__": f"docs_{page.stem}"},
                                               page.name, str(page), 0)
    if not test.examples:
        return
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    try:
        runner.run(test, out=report.append, clear_globs=False)
    finally:
        for value in list(test.globs.values()):  # never leave a server of a failed example running
            if type(value).__name__ == "ResultsServer":
                value.stop(grace=None)
        test.globs.clear()
    assert runner.failures == 0, "".join(report)


def _kinds_table() -> list[list[str]]:
    """Rows of the stream-kinds table of server.md, as lists of cells."""
    text = (DOCS / "server.md").read_text(encoding="utf-8")
    section = text.split("## Stream kinds on the wire", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|") for line in section.splitlines() if line.startswith("| `")]
    return [re.split(r"\s\|\s", row.strip()) for row in rows]


def test_stream_kinds_table_is_what_the_server_sends() -> None:
    from qm_xarray.dtypes import StreamLayout

    rows = _kinds_table()
    assert len(rows) >= 7
    for cells in rows:
        code = [re.findall(r"`([^`]*)`", cell) for cell in cells]
        name, kwargs = eval(f"(lambda name, **kw: (name, kw))({code[1][0]})")  # noqa: S307
        layout = StreamLayout.create(kwargs.get("dtype", "<f8"), kwargs.get("shape", ()),
                                     kwargs.get("timestamps", False))
        for flat, (simple_dtype, shape) in ((False, code[2]), (True, code[3])):
            assert layout.simple_dtype(flat) == simple_dtype, (name, flat)
            assert str(layout.header_shape(flat)) == shape, (name, flat)
        assert layout.itemsize == int(cells[4]), name
