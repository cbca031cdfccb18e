"""Finding the table or function a request names, with PostgREST's not-found errors."""

from __future__ import annotations

import difflib

from devstack.rest.errors import ApiError, SchemaMiss
from devstack.rest.schema_cache import SCHEMA, Function, SchemaCache, Table
from devstack.rest.sql_write import match_function

_NAME_CUTOFF = 0.75  # PostgREST's minimum fuzzy score for table and function hints


def find_table(cache: SchemaCache, name: str) -> Table:
    table = cache.tables.get(name)
    if table is not None:
        return table
    close = difflib.get_close_matches(name, list(cache.tables), n=1, cutoff=_NAME_CUTOFF)
    raise SchemaMiss(
        404,
        "PGRST205",
        f"Could not find the table '{SCHEMA}.{name}' in the schema cache",
        None,
        f"Perhaps you meant the table '{SCHEMA}.{close[0]}'" if close else None,
    )


def _params_text(names: list[str]) -> str:
    return "(" + ", ".join(sorted(names)) + ")"


def find_function(cache: SchemaCache, name: str, keys: set[str], *, post: bool) -> Function:
    candidates = cache.functions.get(name, [])
    matches = match_function(candidates, keys)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = ", ".join(
            f"{SCHEMA}.{fn.name}("
            + ", ".join(f"{p.name} => {p.display}" for p in fn.params)
            + ")"
            for fn in matches
        )
        raise ApiError(
            300, "PGRST203",
            f"Could not choose the best candidate function between: {listed}",
            None,
            "Try renaming the parameters or the function itself in the database "
            "so function overloading can be resolved",
        )
    args = sorted(keys)
    qualified = f"{SCHEMA}.{name}"
    if args:
        message_args = _params_text(args)
        noun = " with parameters " if len(args) > 1 else " with parameter "
        detail_args = noun + ", ".join(args)
    else:
        message_args = detail_args = " without parameters"
    single = " or with a single unnamed json/jsonb parameter" if post else ""
    hint: str | None = None
    if candidates:
        options = [_params_text([p.name for p in fn.params]) for fn in candidates]
        close = difflib.get_close_matches(_params_text(args), options, n=1, cutoff=0.33)
        if close:
            hint = f"Perhaps you meant to call the function {qualified}{close[0]}"
    else:
        close = difflib.get_close_matches(name, list(cache.functions), n=1, cutoff=_NAME_CUTOFF)
        if close:
            hint = f"Perhaps you meant to call the function {SCHEMA}.{close[0]}"
    # A miss either way: the function may have been created or changed since the last load.
    raise SchemaMiss(
        404,
        "PGRST202",
        f"Could not find the function {qualified}{message_args} in the schema cache",
        f"Searched for the function {qualified}{detail_args}{single}, "
        "but no matches were found in the schema cache.",
        hint,
    )
