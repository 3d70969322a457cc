"""`ledgerhook audit`: the audit trail through `GET /admin/v1/audit`, newest first, printed page by
page as the pages come (a table, or one JSON object per line). What the trail holds:
docs/admin-api.md, "Audit trail".
"""

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.cli.admin_client import AUDIT_PAGE_SIZE, AdminError, admin_client

__all__ = ["changes_summary", "parse_instant", "parse_limit", "run_audit"]

# The query parameter behind each option, and back, to name options in the server's 422 details.
FILTERS = {
    "actor": "actor",
    "action": "action",
    "target": "target",
    "connection": "connection_id",
    "since": "since",
    "until": "until",
}
OPTION_OF = {parameter: f"--{option}" for option, parameter in FILTERS.items()}
SPAN = re.compile(r"(\d+)([smhd])")
SPAN_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
CHANGES_WIDTH = 80  # what a table shows of an entry's changes off a terminal; --json shows them all
MIN_CHANGES_WIDTH = 24
# Each column: its title, the widest it grows to fit the first page, and its narrowest.
COLUMNS = (
    ("AT", 20, 20),
    ("ACTOR", 24, 10),
    ("ROLE", 8, 8),
    ("VIA", 7, 7),
    ("CLIENT", 39, 15),
    ("ACTION", 24, 21),
    ("TARGET", 47, 23),
)


def run_audit(args: argparse.Namespace) -> int:
    """Print the trail; 2 for unusable options, 1 when the admin API refused or could not be reached."""
    try:
        filters = audit_filters(args)
        limit = parse_limit(args.limit)
        if not 1 <= args.page_size <= AUDIT_PAGE_SIZE:
            raise ValueError(f"--page-size must be from 1 to {AUDIT_PAGE_SIZE}")
    except ValueError as exc:
        print(f"ledgerhook audit: {exc}", file=sys.stderr)
        return 2
    try:
        shown, more = asyncio.run(stream(args.url, filters, limit, args.page_size, as_json=args.json))
    except AdminError as exc:
        print(f"ledgerhook audit: {_problem(exc)}", file=sys.stderr)
        return 1
    if not shown:
        print("ledgerhook audit: no entries match", file=sys.stderr)
    elif more:
        print(
            f"ledgerhook audit: note: the newest {shown} entries; older ones follow with a larger --limit"
            " (or --limit all)",
            file=sys.stderr,
        )
    return 0


def audit_filters(args: argparse.Namespace) -> dict[str, str]:
    """The query parameters of the filter options given; ValueError naming a time that is none."""
    filters: dict[str, str] = {}
    for option, parameter in FILTERS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if option in ("since", "until"):
            value = parse_instant(value, f"--{option}")
        filters[parameter] = value
    return filters


def parse_instant(value: str, option: str, now: datetime | None = None) -> str:
    """An RFC 3339 instant with an offset, a date (midnight UTC) or a span back from `now` (`90m`,
    `12h`, `7d`), as the RFC 3339 instant the API takes; ValueError saying what `option` accepts."""
    text = value.strip()
    span = SPAN.fullmatch(text)
    moment: datetime | None
    if span is not None:
        ago = timedelta(**{SPAN_UNITS[span.group(2)]: int(span.group(1))})
        moment = (now or datetime.now(UTC)) - ago
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and len(text) == len("2026-12-01"):  # a date alone: midnight UTC
            moment = moment.replace(tzinfo=UTC)
        elif moment is not None and moment.tzinfo is None:
            raise ValueError(f"{option} {value!r} needs an offset, e.g. Z for UTC ({text}Z)")
    if moment is None:
        raise ValueError(
            f"{option} {value!r} is not a time: give 2026-12-01T10:00:00Z, 2026-12-01 (midnight UTC)"
            " or a span back from now (90m, 12h, 7d)"
        )
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_limit(value: str) -> int | None:
    """`--limit`: a number of entries, None for every one (`0` or `all`); ValueError otherwise."""
    text = value.strip().lower()
    if text == "all":
        return None
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"--limit must be a number of entries, or 0 or all for every one (not {value!r})")
    return int(text) or None


async def stream(
    url: str | None, filters: dict[str, str], limit: int | None, page_size: int, *, as_json: bool
) -> tuple[int, bool]:
    """Print each page as it comes; how many entries were printed, and whether older ones matched
    beyond `limit`."""
    table = TrailTable(Console(highlight=False))
    shown = 0
    more = False
    async with admin_client(url) as client:
        async for page in client.audit_pages(filters, limit=limit, page_size=page_size):
            items: list[dict[str, Any]] = page["items"]
            if as_json:
                sys.stdout.write("".join(orjson.dumps(item).decode() + "\n" for item in items))
                sys.stdout.flush()
            elif items:
                table.print(items)
            shown += len(items)
            more = page["next"] is not None
    return shown, more


class TrailTable:
    """Prints pages of entries as one table: the header once, the same column widths on every page
    (taken from the first, so the pages line up), changes in what a terminal has left (CHANGES_WIDTH
    elsewhere). Nothing is squeezed: a terminal too narrow for the columns wraps the lines."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._widths: list[int] | None = None

    def print(self, items: list[dict[str, Any]]) -> None:
        """One page's rows (with the header, on the first page)."""
        rows = [_row(item) for item in items]
        first = self._widths is None
        if self._widths is None:
            self._widths = [
                max(floor, min(ceiling, max(len(row[i]) for row in rows)))
                for i, (_, ceiling, floor) in enumerate(COLUMNS)
            ]
            columns = sum(self._widths) + 2 * len(self._widths)
            left = self._console.width - columns if self._console.is_terminal else CHANGES_WIDTH
            self._widths.append(max(MIN_CHANGES_WIDTH, left))
            self._console.width = columns + self._widths[-1]
        table = Table(box=None, pad_edge=False, show_header=first, header_style="bold")
        for title, width in zip([*(c[0] for c in COLUMNS), "CHANGES"], self._widths, strict=True):
            table.add_column(title, width=width, no_wrap=True, overflow="ellipsis")
        for row, item in zip(rows, items, strict=True):
            changes = changes_summary(item["changes"], self._widths[-1])
            # Text, not markup: names and values are the trail's, never rich's markup.
            table.add_row(*(Text(cell) for cell in [*row, changes]))
        with self._console.capture() as captured:
            self._console.print(table)
        # Written and flushed page by page; a reader gone (`| head`) ends it in main(), quietly.
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        sys.stdout.flush()


def _row(item: dict[str, Any]) -> list[str]:
    """An entry's cells but its changes."""
    at = datetime.fromisoformat(item["at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return [
        at,
        item["actor"],
        item["role"] or "-",
        item["via"],
        item["client"] or "-",
        item["action"],
        item["target"],
    ]


def changes_summary(changes: dict[str, Any], width: int = CHANGES_WIDTH) -> str:
    """An entry's changes on one short line: `status: active -> paused`, `access_token changed`,
    `connections: 3` (members set from nothing to nothing left out); cut to `width` characters."""
    parts = []
    for member, value in changes.items():
        if member.endswith("_changed") and value is True:
            parts.append(f"{member.removesuffix('_changed')} changed")
        elif isinstance(value, dict) and value.keys() == {"from", "to"}:
            if value["from"] is None and value["to"] in (None, "", [], {}):
                continue  # a new connection's empty members say nothing
            if value["from"] is None:
                parts.append(f"{member}: {_value(value['to'])}")
            else:
                parts.append(f"{member}: {_value(value['from'])} -> {_value(value['to'])}")
        else:
            parts.append(f"{member}: {_value(value)}")
    line = ", ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:  # `mode=auto`: the members that are set
        return " ".join(f"{key}={_value(member)}" for key, member in value.items() if member is not None)
    return orjson.dumps(value).decode()


def _problem(exc: AdminError) -> str:
    """The API's answer on one line; a 422's invalid parameters named by their options."""
    if exc.status == 422 and exc.errors:
        named = []
        for error in exc.errors:
            parameter = error.get("parameter", "")
            named.append(f"{OPTION_OF.get(parameter, parameter)}: {error.get('detail', '')}")
        return f"422 {'; '.join(named)}"
    return exc.describe()
