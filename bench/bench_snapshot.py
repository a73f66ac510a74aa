"""Config snapshot at scale: 1,000 tenants, 20,000 extensions, 1M routes.

Measures, on SQLite (and on PostgreSQL with ``--pg``):
- the full build (every operator, route table, tenant, extension and DID) and its memory;
- the time from a committed route change to the snapshot the next call reads, and from a
  committed SIP password change to the HA1 the next REGISTER is checked against: each an
  incremental rebuild, compared with the full build measured in the same run (the ratio);
- the credential lookup the registrar does per REGISTER, beside a plain dict lookup.

    python bench/bench_snapshot.py [--scale 1.0] [--pg]

``--scale 0.1`` builds a tenth of everything (a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine, time_per_call

from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.tenancy import models as m
from pbxcore.tenancy.db import Database
from pbxcore.tenancy.secrets import sip_ha1
from pbxcore.tenancy.snapshot import (
    SnapshotCredentialStore,
    SnapshotService,
    build_snapshot,
)
from pbxcore.tenancy.store import Principal, Store

OPERATORS = 10


async def seed(db: Database, scale: float) -> dict[str, Any]:
    """Operators with one route table each, tenants with 20 extensions, DIDs: bulk inserts."""
    tenants = int(1000 * scale)
    routes = int(1_000_000 * scale)
    now = datetime.now(UTC)
    rng = random.Random(7)
    stamps = {"created_at": now, "updated_at": now}
    ha1 = sip_ha1("100", "x.example", "seed-password")  # one value: hashing is not measured
    ids: dict[str, Any] = {"ops": [], "tables": [], "tenants": []}
    async with db.session() as session:
        for i in range(OPERATORS):
            op = f"op_{i:032d}"
            ids["ops"].append(op)
            await session.execute(
                insert(m.Operator),
                [
                    {"id": op, "name": f"Op {i}", "domain": f"op{i}.example.net", "branding": {}}
                    | stamps
                ],
            )
            trunks = [f"trk_{i:02d}{k:030d}" for k in range(4)]
            await session.execute(
                insert(m.Trunk),
                [
                    {"id": t, "operator_id": op, "name": t, "host": f"{t}.test"} | stamps
                    for t in trunks
                ],
            )
            table = f"rt_{i:032d}"
            ids["tables"].append(table)
            await session.execute(
                insert(m.RouteTableRow), [{"id": table, "operator_id": op, "name": "lcr"} | stamps]
            )
            per_op = routes // OPERATORS
            batch: list[dict[str, Any]] = []
            for r in range(per_op):
                batch.append(
                    {
                        "id": f"rte_{i:02d}{r:030d}",
                        "operator_id": op,
                        "route_table_id": table,
                        "prefix": str(rng.randrange(1, 10**7)),
                        "trunk_id": trunks[r % 4],
                        "priority": 1 + r % 3,
                        "weight": 1,
                        "cost_per_minute": Decimal(rng.randrange(1, 999)) / 1000,
                        "enabled": True,
                    }
                    | stamps
                )
                if len(batch) == 20_000:
                    await session.execute(insert(m.Route), batch)
                    batch = []
            if batch:
                await session.execute(insert(m.Route), batch)
            per_op_tenants = tenants // OPERATORS
            rows, exts, dids = [], [], []
            for j in range(per_op_tenants):
                t = f"ten_{i:02d}{j:030d}"
                ids["tenants"].append((op, t, f"t{j}.op{i}.example.net"))
                rows.append(
                    {
                        "id": t,
                        "operator_id": op,
                        "name": f"T {j}",
                        "slug": f"t{j}",
                        "domain": f"t{j}.op{i}.example.net",
                        "route_table_id": table,
                        "max_extensions": 100,
                        "extension_count": 20,
                        "did_count": 1,
                    }
                    | stamps
                )
                for k in range(20):
                    exts.append(
                        {
                            "id": f"ext_{i:02d}{j:05d}{k:025d}",
                            "operator_id": op,
                            "tenant_id": t,
                            "number": str(100 + k),
                            "name": f"E{k}",
                            "ha1_md5": ha1[DigestAlgorithm.MD5],
                            "ha1_sha256": ha1[DigestAlgorithm.SHA256],
                        }
                        | stamps
                    )
                dids.append(
                    {
                        "id": f"did_{i:02d}{j:030d}",
                        "operator_id": op,
                        "tenant_id": t,
                        "number": f"+7495{i:02d}{j:05d}",
                        "destination": None,
                    }
                    | stamps
                )
            await session.execute(insert(m.Tenant), rows)
            for start in range(0, len(exts), 20_000):
                await session.execute(insert(m.Extension), exts[start : start + 20_000])
            await session.execute(insert(m.Did), dids)
        await session.commit()
    return ids


async def run(url: str, scale: float, label: str) -> list[str]:
    db = Database(url)
    await db.upgrade()
    t0 = time.perf_counter()
    ids = await seed(db, scale)
    seeded = time.perf_counter() - t0

    gc.collect()
    t0 = time.perf_counter()
    async with db.session() as session:
        full = await build_snapshot(session)
    full_s = time.perf_counter() - t0
    routes = sum(len(rt) for o in full.operators.values() for rt in o.route_tables.values())
    del full
    gc.collect()
    tracemalloc.start()  # a second build, for its memory (tracemalloc slows it down)
    async with db.session() as session:
        full = await build_snapshot(session)
    memory, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del full
    gc.collect()

    service = SnapshotService(db)
    await service.load()
    credentials = SnapshotCredentialStore(service)

    # a route change, committed through the store, until the next call's table has it
    op, table = ids["ops"][0], ids["tables"][0]
    route_times = []
    for n in range(3):
        t0 = time.perf_counter()
        async with db.session() as session:
            store = Store(session, Principal.system("bench"), sink=service)
            scope = await store.operator(op)
            rt = await scope.route_tables.get(table)
            await scope.routes(rt).add(
                m.Route(id=m.new_id("rte"), prefix=f"99999{n}", trunk_id=f"trk_00{0:030d}")
            )
            await store.commit()  # returns once the snapshot has it
        route_times.append(time.perf_counter() - t0)
        assert service.current.operators[op].route_tables[table].candidates(f"+99999{n}1234")

    # a SIP password change until the next REGISTER's lookup sees the new HA1
    _op_t, tenant, realm = ids["tenants"][len(ids["tenants"]) // 2]
    password_times = []
    for n in range(5):
        new = sip_ha1("105", realm, f"new-password-{n}")
        t0 = time.perf_counter()
        async with db.session() as session:
            store = Store(session, Principal.system("bench"), sink=service)
            scope = await store.tenant(tenant)
            ext = await scope.extensions.find(m.Extension.number == "105")
            assert ext is not None
            await scope.update_extension(ext, {}, f"new-password-{n}")
            await store.commit()
        password_times.append(time.perf_counter() - t0)
        assert credentials.lookup_ha1(realm, "105", DigestAlgorithm.MD5) == new[DigestAlgorithm.MD5]
    lookup = time_per_call(
        lambda user: credentials.lookup_ha1(realm, user, DigestAlgorithm.MD5),
        [str(100 + k) for k in range(20)],
    )
    plain: dict[tuple[str, str], str] = {(realm, str(100 + k)): "x" for k in range(20)}
    baseline = time_per_call(
        lambda user: plain.get((realm, user)), [str(100 + k) for k in range(20)]
    )
    await service.close()
    await db.close()

    route_s, password_s = min(route_times), min(password_times)
    return [
        f"| {label} | seed {seeded:.0f} s | {len(ids['tenants'])} tenants, "
        f"{service.current.extension_count} extensions, {routes} routes |",
        f"| {label} | full build | {full_s:.2f} s, {memory / 2**20:.0f} MiB |",
        f"| {label} | route change -> next call | {route_s * 1000:.0f} ms "
        f"(max {max(route_times) * 1000:.0f}; {route_s / full_s:.3f}x the full build) |",
        f"| {label} | SIP password -> next REGISTER | {password_s * 1000:.1f} ms "
        f"(max {max(password_times) * 1000:.1f}; {password_s / full_s:.4f}x the full build) |",
        f"| {label} | HA1 lookup per REGISTER | {lookup * 1e9:.0f} ns "
        f"({lookup / baseline:.1f}x a plain dict lookup) |",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--pg", action="store_true", help="also on a private PostgreSQL")
    args = parser.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}; scale {args.scale}")
    lines = ["| store | what | result |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        lines += await run(f"sqlite:///{folder}/bench.db", args.scale, "SQLite")
    if args.pg:
        from tests.peers.postgres import PostgresCluster, find_bin_dir  # noqa: PLC0415

        bin_dir = find_bin_dir()
        if bin_dir is None:
            sys.exit("PostgreSQL is not installed")
        cluster = PostgresCluster(bin_dir)
        cluster.start()
        try:
            lines += await run(cluster.create_database(), args.scale, "PostgreSQL")
        finally:
            cluster.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
