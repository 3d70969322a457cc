"""Poll scheduler at 100,000 accounts: what a scheduling pass costs, and how far intervals stretch.

Starts an embedded PostgreSQL, migrates it, loads `--accounts` Xero connections with COPY (half set
to `poll`, half left `auto`, which Xero's webhooks make sweeps) and syncs them into `poll_accounts`
(`PollState.sync_accounts`). Then, in the same database:

1. **pass cost**: leasing the due accounts for a worker's free slots, `--passes` passes of
   `--slots` each, in two states: *steady* (every account due somewhere in its next interval, about
   1 % due now) and *backlog* (every account due, as after a long outage). The baseline is the
   scheduler before the stretch: its lease statement (one range of `(available_at) WHERE enabled`,
   in due order, no kind) on its own index; then the current one (the polled accounts' range, then
   the swept ones', of `(sweep, available_at) WHERE enabled`). Statements per pass, milliseconds per
   pass (median, p95), buffers per pass (EXPLAIN ANALYZE), and whether any plan scans the table.
2. **sync cost**: one sync with nothing to change, and what the stretch adds to it (the demand read
   and the stretch written).
3. **stretch**: at Xero's app limit (`--app-per-minute`, 10,000) and `--requests` per poll, the
   stretch the scheduler stores, against the baseline's, which has none: its backlog serves every
   due account in due order, so each is polled once per round of all accounts that are overdue
   (a model: the round length T solves demand(T) = budget, every account polled every max(its
   interval, T)).

Prints the tables and one summary line. Run: `python bench/poll_scale.py` (about a minute);
`--help` for the sizes; bench/README.md.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/poll_scale.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from fanout.polling import xero  # noqa: E402
from fanout.polling.budget import ProviderLimits  # noqa: E402
from fanout.polling.poller import plan_stretches  # noqa: E402
from fanout.polling.state import LEASE_DUE_QUERY, PollState  # noqa: E402
from gateway.dev.embedded import EmbeddedPostgres  # noqa: E402
from gateway.runtime.migrate import migrate  # noqa: E402
from provider_auth.providers import Provider  # noqa: E402

XERO = Provider.XERO

# The scheduler before the stretch: one due range in due order, on its index of migration 0003.
BASELINE_LEASE_QUERY = (
    "UPDATE poll_accounts a SET lease_owner = $1, lease_id = gen_random_uuid(), leased_at = now(),"
    " lease_until = now() + $3::double precision * interval '1 second'"
    " FROM (SELECT provider, provider_account_id FROM poll_accounts"
    "  WHERE enabled AND available_at <= now() ORDER BY available_at LIMIT $2"
    "  FOR UPDATE SKIP LOCKED) due"
    " WHERE a.provider = due.provider AND a.provider_account_id = due.provider_account_id"
    " RETURNING a.provider, a.provider_account_id"
)
BASELINE_INDEX = "CREATE INDEX poll_accounts_available ON poll_accounts (available_at) WHERE enabled"
CURRENT_INDEX = "CREATE INDEX poll_accounts_available ON poll_accounts (sweep, available_at) WHERE enabled"


@dataclass(frozen=True, slots=True)
class PassCost:
    """One scheduler in one state."""

    scheduler: str
    state: str
    statements: int
    median_ms: float
    p95_ms: float
    buffers: int
    scans_table: bool


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000, help="Xero tenants, half polled (100,000)")
    parser.add_argument("--passes", type=int, default=200, help="lease passes per state (200)")
    parser.add_argument("--slots", type=int, default=8, help="accounts leased per pass (8, a worker's slots)")
    parser.add_argument("--poll-interval", type=int, default=300, help="polled accounts' interval, s (300)")
    parser.add_argument("--sweep-interval", type=int, default=3600, help="swept accounts' interval, s (3600)")
    parser.add_argument("--app-per-minute", type=int, default=10_000, help="Xero's app limit (10,000)")
    parser.add_argument(
        "--requests", type=float, default=len(xero.ENTITIES), help="requests per poll (one per Xero endpoint)"
    )
    parser.add_argument("--share", type=float, default=0.9, help="part of the app limit planned on (0.9)")
    parser.add_argument("--sweep-yield", type=float, default=4.0, help="sweeps stretch this much more (4)")
    return parser.parse_args(argv)


async def load(pool: asyncpg.Pool, accounts: int) -> float:
    """The connections, by COPY, half `poll` and half `auto`; seconds taken."""
    started = time.perf_counter()
    await pool.copy_records_to_table(
        "connections",
        records=[
            (uuid.uuid4(), f"tenant-{n}", XERO.value, str(uuid.UUID(int=n)), "poll" if n % 2 == 0 else "auto")
            for n in range(accounts)
        ],
        columns=["id", "tenant_id", "provider", "provider_account_id", "polling_mode"],
    )
    return time.perf_counter() - started


async def set_state(pool: asyncpg.Pool, state: str, due_share: float = 0.01) -> None:
    """`steady`: each account due somewhere in its next interval, `due_share` of them due now;
    `backlog`: every account due. No leases."""
    due = (
        "now() - interval_seconds * $1::double precision * interval '1 second'"
        " + random() * interval_seconds * interval '1 second'"
        if state == "steady"
        else "now() - $1::double precision * random() * interval '1 hour'"
    )
    await pool.execute(
        f"UPDATE poll_accounts SET next_due_at = {due},"
        " lease_owner = NULL, lease_id = NULL, leased_at = NULL, lease_until = NULL",
        due_share,
    )
    await pool.execute("VACUUM ANALYZE poll_accounts")


async def use_index(pool: asyncpg.Pool, create: str) -> None:
    await pool.execute("DROP INDEX IF EXISTS poll_accounts_available")
    await pool.execute(create)
    await pool.execute("ANALYZE poll_accounts")


async def pass_cost(
    pool: asyncpg.Pool, scheduler: str, query: str, state: str, passes: int, slots: int
) -> PassCost:
    """`passes` leases of `slots` accounts each, by fresh owners (leased rows stay leased, so each
    pass takes the next due ones, as a busy worker's would); in the steady state, twice as many
    accounts are due as the passes lease (at least 1 %)."""
    accounts = await pool.fetchval("SELECT count(*) FROM poll_accounts")
    await set_state(pool, state, max(0.01, min(1.0, 2 * (passes + 1) * slots / accounts)))
    async with pool.acquire() as conn:
        plan_rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}", "explain", slots, 600.0)
        plan = "\n".join(row[0] for row in plan_rows)
        statement = await conn.prepare(query)
        times = []
        for n in range(passes):
            started = time.perf_counter()
            leased = await statement.fetch(f"bench-{n}", slots, 600.0)
            times.append((time.perf_counter() - started) * 1000)
            assert len(leased) == slots, f"{scheduler}/{state}: pass {n} leased {len(leased)} of {slots}"
    buffers = _top_buffers(plan)
    return PassCost(
        scheduler,
        state,
        1,
        statistics.median(times),
        sorted(times)[int(len(times) * 0.95) - 1],
        buffers,
        "Seq Scan" in plan,
    )


def _top_buffers(plan: str) -> int:
    """The buffers (hit + read) of the whole statement: the first `Buffers:` line, under its root."""
    for line in plan.splitlines():
        text = line.strip()
        if text.startswith("Buffers:"):
            return sum(int(part.split("=")[1]) for part in text.split() if part.startswith(("hit=", "read=")))
    return 0


async def sync_cost(pool: asyncpg.Pool, args: argparse.Namespace) -> tuple[float, float]:
    """Milliseconds of a sync with nothing to change, and of the stretch's demand read and write."""
    state = PollState(pool)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        await state.sync_accounts(args.poll_interval, args.sweep_interval)
        synced = time.perf_counter()
        stretches = plan_stretches(
            await state.demand(),
            lambda provider: ProviderLimits(app_requests_per_minute=args.app_per_minute),
            minute=60.0,
            share=args.share,
            sweep_yield=args.sweep_yield,
            requests_per_poll=lambda provider: args.requests,
        )
        await state.set_stretches(stretches)
        timings.append(((synced - started) * 1000, (time.perf_counter() - synced) * 1000))
    return statistics.median(t[0] for t in timings), statistics.median(t[1] for t in timings)


def baseline_round(demands: Sequence[tuple[float, float]], budget: float) -> float:
    """The round length T of the baseline's backlog: each account (requests per poll, interval)
    polled every max(interval, T), T such that the requests per second fit `budget` (0 if all do)."""

    def asked(t: float) -> float:
        return sum(requests / max(interval, t) for requests, interval in demands)

    if asked(0.0) <= budget:
        return 0.0
    low, high = 0.0, 1.0
    while asked(high) > budget:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if asked(middle) > budget else (low, middle)
    return high


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ledgerhook-poll-scale-") as folder:
        postgres = EmbeddedPostgres(Path(folder) / "pg", cleanup="delete")
        url = postgres.start()
        try:
            await migrate(url)
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
            try:
                return await measure(pool, args)
            finally:
                await pool.close()
        finally:
            postgres.stop()


async def measure(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    print(f"loading {args.accounts:,} Xero connections (half polled, half swept) ...")
    loaded = await load(pool, args.accounts)
    state = PollState(pool)
    started = time.perf_counter()
    await state.sync_accounts(args.poll_interval, args.sweep_interval)
    first_sync = time.perf_counter() - started
    kinds = dict(await pool.fetch("SELECT sweep, count(*) FROM poll_accounts GROUP BY sweep"))
    print(
        f"  COPY {loaded:.1f} s, first sync {first_sync:.1f} s:"
        f" {kinds[False]:,} polled, {kinds[True]:,} swept"
    )

    costs = []
    for scheduler, index, query in (
        ("baseline", BASELINE_INDEX, BASELINE_LEASE_QUERY),
        ("stretch", CURRENT_INDEX, LEASE_DUE_QUERY),
    ):
        await use_index(pool, index)
        for phase in ("steady", "backlog"):
            costs.append(await pass_cost(pool, scheduler, query, phase, args.passes, args.slots))
    await set_state(pool, "steady")
    sync_ms, stretch_ms = await sync_cost(pool, args)

    stored = {row.sweep: row for row in await state.stretches() if row.provider is XERO}
    budget = args.app_per_minute / 60.0
    half = args.accounts / 2
    round_seconds = baseline_round(
        [
            (args.requests * half, float(args.poll_interval)),
            (args.requests * half, float(args.sweep_interval)),
        ],
        budget,
    )
    baseline = {
        False: max(1.0, round_seconds / args.poll_interval),
        True: max(1.0, round_seconds / args.sweep_interval),
    }

    print()
    print(f"pass cost: {args.passes} passes of {args.slots} accounts, {args.accounts:,} accounts")
    print(
        text_table(
            ["", "statements", "median ms", "p95 ms", "buffers", "table scan"],
            [
                [
                    f"{c.scheduler} {c.state}",
                    str(c.statements),
                    f"{c.median_ms:.2f}",
                    f"{c.p95_ms:.2f}",
                    str(c.buffers),
                    "yes" if c.scans_table else "no",
                ]
                for c in costs
            ],
        )
    )
    print(
        f"sync with nothing to change: {sync_ms:.0f} ms; the stretch adds {stretch_ms:.0f} ms (once per sync)"
    )
    print()
    print(
        f"stretch at {args.app_per_minute:,} requests/min (planned on {args.share:.0%}),"
        f" {args.requests:g} requests per poll"
    )
    rows = []
    for sweep, interval in ((False, args.poll_interval), (True, args.sweep_interval)):
        row = stored[sweep]
        rows.append(
            [
                "swept" if sweep else "polled",
                f"{row.accounts:,}",
                f"{row.demand:,.0f}",
                f"x{baseline[sweep]:.1f} ({interval * baseline[sweep] / 60:,.0f} min)",
                f"x{row.stretch:.1f} ({interval * row.stretch / 60:,.0f} min)",
            ]
        )
    print(text_table(["", "accounts", "asks req/s", "baseline", "stretch"], rows))
    print(
        f"  budget {budget:,.0f} req/s; the baseline serves its backlog in due order: every account once per"
        f" {round_seconds / 60:,.0f} min round, whatever its kind"
    )

    base = {c.state: c for c in costs if c.scheduler == "baseline"}
    new = {c.state: c for c in costs if c.scheduler == "stretch"}
    ratio = new["steady"].median_ms / base["steady"].median_ms
    ok = not any(c.scans_table for c in costs)
    print()
    print(
        f"summary: lease pass {new['steady'].median_ms:.2f} ms vs baseline {base['steady'].median_ms:.2f} ms"
        f" (ratio {ratio:.2f}; backlog {new['backlog'].median_ms:.2f} vs {base['backlog'].median_ms:.2f}),"
        f" 1 statement per pass, {'no table scan' if ok else 'A TABLE SCAN'};"
        f" polled accounts every {args.poll_interval * stored[False].stretch / 60:,.0f} min"
        f" (baseline {args.poll_interval * baseline[False] / 60:,.0f}),"
        f" swept every {args.sweep_interval * stored[True].stretch / 3600:,.1f} h"
        f" (baseline {args.sweep_interval * baseline[True] / 3600:,.1f})"
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
