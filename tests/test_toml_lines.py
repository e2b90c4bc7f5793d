"""The one TOML reader: errors name the line of the key, of its table, or of the syntax."""

from __future__ import annotations

import pytest

from harness.errors import HarnessInputError
from harness.toml_lines import TomlLines, parse_toml

TEXT = """# a fleet
[fleet]
name = "x"

[[cohorts]]
name = "a"

[[cohorts]]
name = "b"
count = 3
"""


def test_keys_and_array_tables_have_their_own_lines() -> None:
    lines = TomlLines(TEXT)
    assert lines.line("fleet", 0, "name") == 3
    assert lines.line("cohorts", 0, "name") == 6
    assert lines.line("cohorts", 1, "count") == 10
    assert lines.line("cohorts", 1, "missing") == 8  # the table's line
    assert lines.line("nowhere") is None


def test_a_syntax_error_is_one_line_naming_where() -> None:
    with pytest.raises(HarnessInputError) as bad:
        parse_toml('[fleet]\nname = "x\n', "f.toml")
    assert bad.value.where == "f.toml:2" and bad.value.field == "toml"
