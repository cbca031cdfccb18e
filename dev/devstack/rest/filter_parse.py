"""Filters, logic trees and the sorting of query parameters (PostgREST's QueryParams.hs).

    col=not.in.(a,"b,c")   col=fts(english).cat   col=like(any).{a*,b*}     filters
    or=(a.eq.1,and(b.gt.2,c.is.null))   images.not.and=(...)              logic trees

A parameter is a filter when its key has an embed path or its value an operator; anything
else is an RPC argument (for GET /rpc/fn?arg=...), exactly as PostgREST decides.
"""

from __future__ import annotations

import re

from devstack.rest.errors import ApiError
from devstack.rest.query_ast import (
    FTS_OPERATORS,
    OPERATORS,
    QUANTIFIABLE,
    Field,
    Filter,
    LogicTree,
    OpExpr,
    QueryParams,
)
from devstack.rest.query_parse import (
    Cursor,
    field,
    field_name,
    identifier,
    json_path,
    parse_columns,
    parse_order,
    parse_select,
    quoted,
)

_OPERATOR_NAME = re.compile(r"[^.(]*")


def _list_val(c: Cursor) -> tuple[str, ...]:
    c.skip_ws()
    c.expect("(")
    c.skip_ws()
    values: list[str] = []
    any_quoted = False
    while True:
        start = c.pos
        value: str | None = None
        if c.peek() == '"':
            try:
                text = quoted(c)
                if c.at_end() or c.peek() in ",)":
                    value = text
                    any_quoted = True
            except ApiError:
                pass
            if value is None:
                c.pos = start
        if value is None:
            while not c.at_end() and c.peek() not in ",)":
                c.pos += 1
            value = c.text[start:c.pos]
        values.append(value)
        if not c.eat(","):
            break
    c.skip_ws()
    c.expect(")")
    c.skip_ws()
    if values == [""] and not any_quoted:
        return ()  # "in.()" is the empty list
    return tuple(values)


def _logic_single_val(c: Cursor) -> str:
    start = c.pos
    if c.peek() == '"':
        try:
            text = quoted(c)
            if c.at_end() or c.peek() in ",)":
                return text
        except ApiError:
            pass
        c.pos = start
    if c.peek() == "{":
        end = c.text.find("}", c.pos)
        if end != -1 and "{" not in c.text[c.pos + 1:end]:
            c.pos = end + 1
            return c.text[start:c.pos]
    while not c.at_end() and c.peek() not in ",)":
        c.pos += 1
    return c.text[start:c.pos]


def _single_val(c: Cursor, in_logic: bool) -> str:
    if in_logic:
        return _logic_single_val(c)
    value = c.rest()
    c.pos = len(c.text)
    return value


def _op_expr(c: Cursor, in_logic: bool) -> OpExpr:
    negated = c.eat("not.")
    if c.eat("in."):
        return OpExpr(negated, "in", _list_val(c))
    if c.eat("is."):
        for tri in ("null", "unknown", "true", "false"):
            if c.rest()[: len(tri)].lower() == tri:
                c.pos += len(tri)
                return OpExpr(negated, "is", tri)
        raise c.fail("null or trilean value (unknown, true, false)")
    m = _OPERATOR_NAME.match(c.text, c.pos)
    assert m is not None
    name = m.group(0)
    if name in FTS_OPERATORS:
        c.pos = m.end()
        lang = None
        if c.eat("("):
            lang = identifier(c)
            c.expect(")")
        c.expect(".")
        return OpExpr(negated, name, _single_val(c, in_logic), lang)
    dot = c.text.find(".", c.pos)
    op = c.text[c.pos:dot] if dot != -1 else c.rest()
    quantifier: str | None = None
    for q in ("any", "all"):
        if op.endswith(f"({q})") and op[: -len(q) - 2] in QUANTIFIABLE:
            op, quantifier = op[: -len(q) - 2], q
    if dot == -1 or op not in OPERATORS:
        err = c.fail("operator (eq, gt, ...)")
        err.details = f"unknown single value operator {op}"
        raise err
    c.pos = dot + 1
    return OpExpr(negated, op, _single_val(c, in_logic), None, quantifier)


def _tree_path(c: Cursor) -> tuple[tuple[str, ...], Field]:
    names = [field_name(c)]
    while c.eat("."):
        names.append(field_name(c))
    path = json_path(c)
    if not c.at_end():
        raise c.fail("'.', '->' or end of input")
    return tuple(names[:-1]), Field(names[-1], path)


def parse_filter(key: str, value: str) -> tuple[tuple[str, ...], Filter]:
    embed, fld = _tree_path(Cursor(key, f"tree path ({key})"))
    return embed, Filter(fld, _op_expr(Cursor(value, f"filter ({value})"), False))


def _logic_node(c: Cursor) -> Filter | LogicTree:
    start = c.pos
    try:
        fld = field(c)
        c.expect(".")
        return Filter(fld, _op_expr(c, True))
    except ApiError:
        c.pos = start
    c.skip_ws()
    negated = c.eat("not.")
    if c.eat("and"):
        op = "and"
    elif c.eat("or"):
        op = "or"
    else:
        raise c.fail("logic operator (and, or)")
    return LogicTree(negated, op, _logic_children(c))


def _logic_children(c: Cursor) -> list[Filter | LogicTree]:
    c.skip_ws()
    c.expect("(")
    children = [_logic_node(c)]
    while True:
        c.skip_ws()
        if not c.eat(","):
            break
        c.skip_ws()
        children.append(_logic_node(c))
    c.skip_ws()
    c.expect(")")
    c.skip_ws()
    return children


def parse_logic(key: str, value: str) -> tuple[tuple[str, ...], LogicTree]:
    """``or=(...)``, ``not.and=(...)``, ``images.or=(...)``."""
    parts = key.split(".")
    op = parts[-1]
    negated = "not" in parts[:-1]
    embed = tuple(p for p in parts[:-1] if p != "not")
    c = Cursor(value, f"logic tree ({value})")
    children = _logic_children(c)
    if not c.at_end():
        raise c.fail("end of input")
    return embed, LogicTree(negated, op, children)


def _has_operator(value: str) -> bool:
    """PostgREST's test for "this parameter is a filter, not an RPC argument"."""
    parts = value.split(".")
    if parts[0] == "not" and len(parts) >= 2:
        return True
    first = parts[0].removesuffix("(any)").removesuffix("(all)")
    if first in ("is", "in") or first in OPERATORS or first in FTS_OPERATORS:
        return True
    head, sep, _ = value.partition("(")
    return bool(sep) and head in FTS_OPERATORS


def _embed_path(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")[:-1])


def parse_query(pairs: list[tuple[str, str]]) -> QueryParams:
    """Sort the decoded query pairs into PostgREST's parameter kinds (last value wins)."""
    q = QueryParams()
    for key, value in pairs:
        last = key.split(".")[-1]
        if key == "select":
            q.select = parse_select(value)
        elif key == "columns":
            q.columns = parse_columns(value, "columns")
        elif key == "on_conflict":
            q.on_conflict = parse_columns(value, "on_conflict")
        elif last == "order":
            if value:
                q.order[_embed_path(key)] = parse_order(value)
        elif last in ("limit", "offset"):
            target = q.limit if last == "limit" else q.offset
            try:
                n = int(value)
            except ValueError:
                continue  # PostgREST ignores what does not read as an integer
            if n < 0:
                raise ApiError(416, "PGRST103", "Requested range not satisfiable",
                               "Limit should be greater than or equal to zero.")
            target[_embed_path(key)] = n
        elif last in ("and", "or"):
            q.logic.append(parse_logic(key, value))
        elif "." in key or _has_operator(value):
            q.filters.append(parse_filter(key, value))
        else:
            q.rpc_args.append((key, value))
    return q
