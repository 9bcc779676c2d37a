"""README's results section is the newest committed table's (issue 26, item 5). No Ray, no servers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import readme_results as rr  # noqa: E402 - tools/ is not a package


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_block_is_the_newest_tables():
    block = rr.readme_block(_readme())
    assert block == rr.render(), "README's results block is stale: run .venv/bin/python tools/readme_results.py"


def test_every_number_in_the_block_is_in_its_table():
    """Independent of the renderer: a number README quotes must be written in a current table."""
    block = rr.readme_block(_readme())
    source = "\n".join(t.path.read_text(encoding="utf-8") for t in rr.current_tables())
    source += "\n" + "\n".join(t.path.name for t in rr.current_tables())
    missing = sorted(rr.numbers(block) - rr.numbers(source))
    assert not missing, f"numbers in README's results block that no current table states: {missing}"
    for table in rr.current_tables():
        assert table.path.relative_to(ROOT).as_posix() in block


def test_readme_quotes_no_superseded_table():
    readme = _readme()
    for table in rr.tables():
        if table.superseded:
            assert table.path.name not in readme, f"README still points at superseded {table.path.name}"


def test_superseded_tables_say_so_first_and_name_an_existing_successor():
    for table in rr.tables():
        if not table.superseded:
            continue
        line = rr.first_line(table.path)
        named = [t.path.name for t in rr.tables() if t.path.name in line and t.path != table.path]
        assert named, f"{table.path.name}: its superseded line names no table in experiments/results/"
        successor = next(t for t in rr.tables() if t.path.name == named[0])
        assert successor.date >= table.date, f"{table.path.name} superseded by an older table {successor.path.name}"


def _table(folder: Path, name: str, superseded_by: str | None = None, fd: str = "95.63") -> None:
    head = f"> **Superseded** by `{superseded_by}`.\n\n" if superseded_by else ""
    (folder / name).write_text(
        f"{head}# Paper ablation — test\n\n- command: `x`\n\n| row | quality FD ↓ | val CE ↓ |\n|---|---|---|\n"
        f"| Baseline | {fd} ± 1 | 1.7 ± 0.1 |\n\nVerdicts, from the numbers:\n- (a) holds.\n\n"
        f"RATIO lines (means over seeds):\n- RATIO a_over_b 0.5\n", encoding="utf-8")


def test_current_table_is_the_newest_unmarked_one_per_study(tmp_path):
    _table(tmp_path, "paper_ablation_cpu_2026-11-24.md", superseded_by="paper_ablation_cpu_2026-12-01.md")
    _table(tmp_path, "paper_ablation_cpu_2026-12-01-old.md", superseded_by="paper_ablation_cpu_2026-12-01.md")
    _table(tmp_path, "paper_ablation_cpu_2026-12-01.md", fd="88.8")
    _table(tmp_path, "time_to_quality_cpu_2026-12-03.md", fd="77.7")
    (tmp_path / "README.md").write_text("# not a table\n")
    current = rr.current_tables(tmp_path)
    assert [t.path.name for t in current] == ["time_to_quality_cpu_2026-12-03.md", "paper_ablation_cpu_2026-12-01.md"]
    block = rr.render(tmp_path)
    assert "88.8 ± 1" in block and "77.7 ± 1" in block and "95.63" not in block
    assert "RATIO a_over_b 0.5" in block and "- (a) holds." in block


def test_an_unmarked_older_or_twin_table_is_refused(tmp_path):
    _table(tmp_path, "paper_ablation_cpu_2026-11-24.md")
    _table(tmp_path, "paper_ablation_cpu_2026-12-01.md")
    with pytest.raises(rr.ResultsError, match="2026-11-24.md older than .* but not marked"):
        rr.current_tables(tmp_path)
    _table(tmp_path, "paper_ablation_cpu_2026-11-24.md", superseded_by="paper_ablation_cpu_2026-12-01.md")
    _table(tmp_path, "paper_ablation_cpu_2026-12-01-rerun.md")
    with pytest.raises(rr.ResultsError, match="all unmarked"):
        rr.current_tables(tmp_path)


def test_check_mode_reports_a_stale_block_and_rewrite_fixes_it(tmp_path):
    _table(tmp_path, "paper_ablation_cpu_2026-12-01.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{rr.BEGIN}\nold numbers 1.0\n{rr.END}\n\nafter\n", encoding="utf-8")
    args = ["--readme", str(readme), "--results", str(tmp_path)]
    assert rr.main([*args, "--check"]) == 1
    assert rr.main(args) == 0
    assert rr.main([*args, "--check"]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old numbers" not in text


SHARED_NOTES = ("DESIGN" + ".md", "RAY_NOTES" + ".md", "PAPER" + ".md")  # split: this file must not match itself


def _repo_texts():
    patterns = ("README.md", "docs/*.md", "arvid_ray/**/*.py", "tests/**/*.py", "experiments/**/*.py",
                "experiments/**/*.md", "experiments/**/*.yaml", "cluster/**/*.md", "cluster/**/*.yaml", "tools/*.py")
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and ".venv" not in path.parts:
                yield path, path.read_text(encoding="utf-8", errors="replace")


def test_docs_references_resolve_inside_the_repo():
    """The code cites docs/design.md, docs/ray_notes.md, docs/paper.md — never notes a clone does not hold."""
    import re

    stale, missing = [], []
    for path, text in _repo_texts():
        rel = path.relative_to(ROOT).as_posix()
        stale += [f"{rel}: {name}" for name in SHARED_NOTES if name in text]
        for ref in set(re.findall(r"docs/[\w.-]+\.md", text)):
            if not (ROOT / ref).is_file():
                missing.append(f"{rel}: {ref}")
    assert not stale, "references to notes outside the repo (use docs/design.md, docs/ray_notes.md, docs/paper.md):\n" \
        + "\n".join(stale)
    assert not missing, "references to docs/ files that do not exist:\n" + "\n".join(missing)
