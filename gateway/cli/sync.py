"""`ledgerhook backfill ID --since DATE` (queue a backfill and follow it with a progress bar) and
`ledgerhook sync ID` (where polling stands, as a table), through the admin API."""

import argparse
import asyncio
import sys
import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from gateway.cli.admin_client import AdminClient, AdminError, admin_client, pretty

__all__ = ["run_backfill", "run_sync"]

# How often a followed backfill is looked at.
FOLLOW_SECONDS = 1.0


def run_sync(args: argparse.Namespace) -> int:
    """Print a connection's sync status; 1 when the admin API refused or could not be reached."""
    try:
        status = asyncio.run(_sync(args.url, args.id))
    except AdminError as exc:
        print(f"ledgerhook sync: {exc.describe()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(pretty(status))
    else:
        render_sync(Console(soft_wrap=True), status)
    return 0


async def _sync(url: str | None, connection_id: str) -> dict[str, Any]:
    async with admin_client(url) as client:
        return await client.sync(connection_id)


def run_backfill(args: argparse.Namespace) -> int:
    """Queue a backfill and follow it until it finishes (0 done, 1 failed or refused); Ctrl-C stops
    following, never the job (130)."""
    console = Console(stderr=True, soft_wrap=True)
    entities = _entities(args.entities)
    job: dict[str, Any] | None = None

    async def start_and_follow() -> int:
        nonlocal job
        async with admin_client(args.url) as client:
            job = await client.backfill(args.id, args.since, entities)
            console.print(
                f"backfill {job['id']} queued for connection {args.id}:"
                f" {', '.join(job['entities'])} since {job['since']}"
            )
            if args.no_follow:
                return 0
            return await follow(client, console, args.id, job)

    try:
        return asyncio.run(start_and_follow())
    except AdminError as exc:
        console.print(f"ledgerhook backfill: {exc.describe()}", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        if job is not None:
            console.print(
                f"stopped following; backfill {job['id']} goes on in the worker"
                f" (`ledgerhook sync {args.id}` shows it)"
            )
        return 130


async def follow(client: AdminClient, console: Console, connection_id: str, job: dict[str, Any]) -> int:
    """Show the job's progress until it is done (0) or failed (1)."""
    job_id = job["id"]
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(f"backfill {job_id[:8]}", total=1.0, detail="queued")
        last_line = 0.0
        while True:
            current = (await client.sync(connection_id)).get("backfill")
            if current is None or current["id"] != job_id:
                console.print(
                    f"backfill {job_id} is no longer the connection's latest; see `ledgerhook sync`"
                )
                return 1
            progress = current["progress"]
            detail = _detail(current)
            bar.update(task, completed=progress["fraction"], detail=detail)
            if not console.is_terminal and time.monotonic() - last_line >= 5:
                console.print(f"backfill {job_id}: {round(progress['fraction'] * 100)}% {detail}")
                last_line = time.monotonic()
            if current["state"] in ("done", "failed"):
                break
            await asyncio.sleep(FOLLOW_SECONDS)
    took = time.monotonic() - started
    if current["state"] == "failed":
        console.print(f"backfill {job_id} failed: {current['last_error']}", markup=False, highlight=False)
        return 1
    repeats = (
        " (the others were on the topic already)"
        if progress["events_published"] < progress["records_read"]
        else ""
    )
    console.print(
        f"backfill {job_id} done in {took:.0f} s: {progress['pages_done']} pages,"
        f" {progress['records_read']} records read, {progress['events_published']} events published{repeats}"
    )
    return 0


def render_sync(console: Console, status: dict[str, Any]) -> None:
    """The sync status as a heading, a table of entities, and the budget and backfill lines."""
    polling = status["polling"]
    console.print(
        f"connection {status['connection_id']}  {status['provider']} {status['provider_account_id']}"
        f"  {status['status']}",
        highlight=False,
    )
    every = polling["effective_interval_seconds"]
    mode = polling["effective_mode"] + (f" every {every} s" if every else "")
    shared = polling["account_interval_seconds"]
    if shared and shared != every:
        mode += f" (the account: every {shared} s)"
    stretch = status.get("stretch") or {}
    if stretch.get("factor", 1.0) > 1.0:
        mode += (
            f", stretched x{stretch['factor']:g} to every {stretch['interval_seconds']} s"
            f" ({stretch['kind']} accounts; the provider's app limit is short)"
        )
    console.print(
        f"polling: {mode}, setting {polling['mode']}; {'polled' if polling['polled'] else 'not polled now'}",
        highlight=False,
    )
    entities = status["entities"]
    if entities:
        # One poll reads every entity of the account: its last and next poll are said once.
        last = entities[0]["last_poll"]
        when = f"last poll {_when(last['at'])} {last['outcome']}" if last else "not polled yet"
        console.print(f"{when}; next due {_when(entities[0]['next_due_at'])}", highlight=False)
        table = Table("ENTITY", "WATERMARK", "LAG", box=None)
        for entity in entities:
            table.add_row(entity["entity"], _when(entity["watermark"]), _seconds(entity["lag_seconds"]))
        console.print(table)
    if status["requests"]:
        uses = ", ".join(
            f"{label} {use['used']}/{use['limit']}"
            + (f" (parked {use['parked_seconds']:.0f} s)" if use["parked_seconds"] else "")
            for label, use in status["requests"].items()
        )
        console.print(f"requests: {uses}", highlight=False)
    backfill = status.get("backfill")
    if backfill is not None:
        console.print(
            f"backfill {backfill['id']}: {backfill['state']}, since {_when(backfill['since'])},"
            f" {round(backfill['progress']['fraction'] * 100)}% {_detail(backfill)}",
            highlight=False,
        )
        if backfill["last_error"]:
            console.print(f"  {backfill['last_error']}", markup=False, highlight=False)


def _detail(job: dict[str, Any]) -> str:
    progress = job["progress"]
    parts = [
        f"{progress['pages_done']} pages",
        f"{progress['records_read']} records",
        f"{progress['events_published']} events",
    ]
    left = progress["estimated_seconds_left"]
    if job["state"] in ("queued", "running") and left is not None:
        parts.append(f"~{_seconds(left)} left")
    if job["state"] == "running" and job["last_error"]:
        parts.append(f"waiting: {job['last_error']}")
    return ", ".join(parts)


def _entities(values: list[str] | None) -> list[str] | None:
    """`--entities a,b --entities c` as [a, b, c]; None when not given."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _when(value: str | None) -> str:
    if value is None:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 5400:
        return f"{value / 3600:.1f} h"
    if value >= 90:
        return f"{value / 60:.0f} min"
    return f"{value:.0f} s"
