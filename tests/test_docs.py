"""The README cannot drift from the code: its configuration table is exactly the settings `shared/settings.py`
reads (names and defaults), and the benchmark results kept in git are the ones the docs cite."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from shared.settings import Settings, _parse_duration_s

ROOT = Path(__file__).resolve().parent.parent


def env_names() -> dict[str, tuple[str, Any]]:
    """Every setting's environment variable -> (field name, default)."""
    names = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        name = alias.choices[0] if isinstance(alias, AliasChoices) else f"KAIHOOKS_{field.upper()}"
        names[str(name)] = (field, info.default)
    return names


def configuration_rows() -> list[tuple[list[str], list[str]]]:
    """(variables, their defaults) per row of the README's configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not line.startswith("| `") or len(cells) != 3:
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[2].split(" / ")]
        rows.append((names, defaults if len(defaults) == len(names) else [cells[2]] * len(names)))
    return rows


def documents(default: Any, cell: str) -> bool:
    """Whether a table cell states this default."""
    plain = cell.replace("`", "")
    if default is PydanticUndefined:
        return cell.startswith("required")
    if isinstance(default, bool):
        return plain.startswith("on" if default else "off")
    if isinstance(default, tuple):
        if not default:
            return plain.startswith("none")
        return tuple(_parse_duration_s(p) for p in plain.split()[0].split(",")) == tuple(map(float, default))
    if isinstance(default, int | float):
        number = str(default) if isinstance(default, int) else f"{default:g}"
        return re.match(rf"{re.escape(number)}\b", plain) is not None
    return f"`{default}`" in cell


def test_the_configuration_table_lists_every_setting_and_nothing_else() -> None:
    documented = [name for names, _ in configuration_rows() for name in names]
    assert len(documented) == len(set(documented)), "a variable is listed twice"
    assert sorted(set(env_names()) - set(documented)) == [], "settings missing from the README's table"
    assert sorted(set(documented) - set(env_names())) == [], "the README lists variables no setting reads"


def test_the_configuration_table_states_each_default() -> None:
    known = env_names()
    wrong = [f"{name}: README says {cell!r}, the code {known[name][1]!r}"
             for names, defaults in configuration_rows() for name, cell in zip(names, defaults, strict=True)
             if name in known and not documents(known[name][1], cell)]
    assert wrong == []


def test_the_check_would_notice_a_wrong_default() -> None:
    assert documents(10.0, "10") and not documents(10.0, "100")
    assert documents(43200, "43200 (12 h)") and not documents(43200, "4320")
    assert documents(False, "off") and not documents(True, "off")
    assert documents((5.0, 300.0), "`5s,5m`") and not documents((5.0, 300.0), "`5s,6m`")
    assert documents((), "none: `/internal/*` refuses all") and documents("arq:queue", "`arq:queue`")


def test_the_benchmark_results_in_git_are_the_ones_the_docs_cite() -> None:
    tracked = subprocess.run(["git", "ls-files", "bench/results"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "no benchmark result is kept (BENCHMARKS.md cites some)"
    cited = "\n".join(p.read_text() for p in [ROOT / "BENCHMARKS.md", ROOT / "bench" / "README.md",
                                               *(ROOT / "docs").glob("*.md")])
    stamps = set(re.findall(r"\d{8}T\d{4,6}", cited))
    uncited = [path for path in tracked
               if not any(Path(path).name.startswith(stamp) for stamp in stamps)]
    assert uncited == [], "result files kept in git that no document cites (git rm them, or cite them)"
