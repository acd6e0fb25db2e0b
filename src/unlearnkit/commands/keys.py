"""`unlearnkit keys add|list|revoke PLAN`: the service's API keys, kept hashed in the run's ledger."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.errors import UnlearnkitError

if TYPE_CHECKING:
    from unlearnkit.service.store import ServiceStore

keys_app = typer.Typer(help="API keys of `unlearnkit serve` (stored as scrypt hashes in the run's ledger).", no_args_is_help=True)
PlanArg = Annotated[Path, typer.Argument(help="the plan file (its run folder holds the keys)")]


def _store(plan: Path) -> ServiceStore:
    """The key store of the plan's run folder (the folder and its ledger are made if new)."""
    from unlearnkit.plan import load_plan
    from unlearnkit.service.store import ServiceStore

    return ServiceStore(load_plan(plan, check_files=False).output)


@keys_app.command("add")
def add_command(
    plan: PlanArg,
    role: Annotated[str, typer.Option("--role", help="submitter, operator or auditor")],
    name: Annotated[str, typer.Option("--name", help="who holds the key (shown in logs and the audit)")] = "",
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="requests per minute for this key (default: the plan's)", min=0.001)] = None,
) -> None:
    """Make a key; it is printed once, on stdout, and only its hash is kept."""
    from unlearnkit.service.keys import ROLES

    if role not in ROLES:
        raise UnlearnkitError(f"--role '{role}': use one of {', '.join(ROLES)}")
    store = _store(plan)
    key = store.add_key(name or role, role, rate_limit)  # type: ignore[arg-type]
    store.close()
    Console(stderr=True).print(f"key {key.key_id} ({role}{', ' + name if name else ''}): shown once below; only its hash is stored")
    print(key.token)


@keys_app.command("list")
def list_command(plan: PlanArg) -> None:
    """The keys (ids, names, roles; never a secret)."""
    store = _store(plan)
    table = Table(title=f"API keys ({store.path})")
    for column in ("id", "name", "role", "rate limit", "created", "revoked"):
        table.add_column(column)
    for row in store.keys():
        table.add_row(row["id"], row["name"], row["role"], "–" if row["rate_limit"] is None else f"{row['rate_limit']:g}/min",
                      row["created_at"][:19], (row["revoked_at"] or "–")[:19])
    store.close()
    Console().print(table)


@keys_app.command("revoke")
def revoke_command(plan: PlanArg, key_id: Annotated[str, typer.Argument(help="the key's id (its first part after uk_)")]) -> None:
    """Revoke a key: the service refuses it from its next request on."""
    store = _store(plan)
    done = store.revoke_key(key_id)
    store.close()
    if not done:
        raise UnlearnkitError(f"{store.path}: no active key '{key_id}' (see `unlearnkit keys list`)")
    Console().print(f"revoked {key_id}")
