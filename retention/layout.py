"""Text that fits a terminal: tables that fold their wide columns under each row, and long
lines wrapped, so that nothing is cut off and nothing is lost. Pure."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int],
    *,
    width: int | None = None,
    folded: Sequence[int] = (),
) -> list[str]:
    """Given headers, rows of cells, the right-aligned columns, a width (None: no limit) and the
    columns that may leave the table, return its lines. When the whole table is wider than
    ``width``, the ``folded`` columns leave it and each row is followed by their values, indented
    and wrapped, under their header's name. Example: with width 40, a plan row becomes
    ``logs  delete  1,200`` then ``    store.table app.logs · clock logged_at``."""
    lines = _aligned(headers, rows, numeric)
    if width is None or not folded or max(len(line) for line in lines) <= width:
        return lines
    kept = [index for index in range(len(headers)) if index not in folded]
    narrow = _aligned(
        [headers[index] for index in kept],
        [[row[index] for index in kept] for row in rows],
        {position for position, index in enumerate(kept) if index in numeric},
    )
    out = narrow[:2]
    for row, line in zip(rows, narrow[2:], strict=True):
        out.append(line)
        rest = " · ".join(f"{headers[index].lower()} {row[index]}" for index in folded)
        out += textwrap.wrap(
            rest, width, initial_indent="    ", subsequent_indent="      ", break_on_hyphens=False
        )
    return out


def wrap(lines: Sequence[str], width: int | None) -> list[str]:
    """Given lines and a width (None: no limit), return them with each longer line wrapped at
    spaces, its continuation indented two more than its first line."""
    if width is None:
        return list(lines)
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")))
        out += textwrap.wrap(
            line,
            width,
            initial_indent="",
            subsequent_indent=indent + "  ",
            break_on_hyphens=False,
            drop_whitespace=True,
        ) or [line]
    return out


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(row[index]) for row in [headers, *rows]) for index in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[index]) if index in numeric else cell.ljust(widths[index])
            for index, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *(line(row) for row in rows)]
