"""Parsers for PostgREST's query-string grammar (a port of ApiRequest/QueryParams.hs).

    select=id,alias:col->key::text,images!inner(url)     select forest
    col=not.in.(a,"b,c")  col=fts(english).cat           filters
    or=(a.eq.1,and(b.gt.2,c.is.null))                     logic trees
    order=col.desc.nullslast,rel(col).asc                 order terms
    columns="a","b"   on_conflict=id                      column lists

Everything here is pure parsing: names are checked against the schema cache later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from devstack.postgrest.errors import ApiError, parse_error

OPERATORS = frozenset(
    {"eq", "gte", "gt", "lte", "lt", "neq", "like", "ilike", "cs", "cd", "ov",
     "sl", "sr", "nxr", "nxl", "adj", "match", "imatch", "isdistinct"}
)
FTS_OPERATORS = frozenset({"fts", "plfts", "phfts", "wfts"})
QUANTIFIABLE = frozenset({"eq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"})
_INDEX = re.compile(r"-?\d+")


@dataclass(frozen=True)
class JsonStep:
    arrow: str  # "->" or "->>"
    key: str
    index: bool


@dataclass(frozen=True)
class Field:
    name: str
    path: tuple[JsonStep, ...] = ()

    @property
    def output_name(self) -> str:
        for step in reversed(self.path):
            if not step.index:
                return step.key
        return self.name


@dataclass
class SelectField:
    field: Field
    alias: str | None = None
    cast: str | None = None


@dataclass
class SelectRelation:
    name: str
    alias: str | None
    hint: str | None
    join: str | None  # "inner" | "left" | None
    children: list[SelectItem]


SelectItem = SelectField | SelectRelation


@dataclass(frozen=True)
class OpExpr:
    negated: bool
    op: str
    value: str | tuple[str, ...]
    lang: str | None = None
    quantifier: str | None = None  # "any" | "all": like(any).{a,b}


@dataclass(frozen=True)
class Filter:
    field: Field
    expr: OpExpr


@dataclass
class LogicTree:
    negated: bool
    op: str  # "and" | "or"
    children: list[Filter | LogicTree]


@dataclass(frozen=True)
class OrderTerm:
    field: Field
    relation: str | None = None
    desc: bool = False
    nulls: str | None = None  # "first" | "last"


class _Cursor:
    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.what = what
        self.pos = 0

    def rest(self) -> str:
        return self.text[self.pos:]

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def eat(self, token: str) -> bool:
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t") and not self.at_end():
            self.pos += 1

    def fail(self, expecting: str) -> ApiError:
        found = repr(self.peek()) if not self.at_end() else "end of input"
        err = parse_error(self.what, self.text, f"unexpected {found} expecting {expecting}")
        err.message += f" (line 1, column {self.pos + 1})"
        return err

    def expect(self, token: str) -> None:
        if not self.eat(token):
            raise self.fail(repr(token))


# -- names ---------------------------------------------------------------------------------
def _quoted(c: _Cursor) -> str:
    c.expect('"')
    out: list[str] = []
    while True:
        ch = c.peek()
        if c.at_end():
            raise c.fail('closing \'"\'')
        c.pos += 1
        if ch == '"':
            return "".join(out)
        if ch == "\\":
            if c.at_end():
                raise c.fail("escaped character")
            out.append(c.peek())
            c.pos += 1
        else:
            out.append(ch)


def _identifier(c: _Cursor) -> str:
    start = c.pos
    while not c.at_end() and (c.peek().isalnum() or c.peek() in "_ $"):
        c.pos += 1
    if c.pos == start:
        raise c.fail("field name (* or [a..z0..9_$])")
    return c.text[start:c.pos].strip()


def field_name(c: _Cursor) -> str:
    if c.peek() == '"':
        return _quoted(c)
    parts = [_identifier(c)]
    while c.peek() == "-" and not c.text.startswith("->", c.pos):
        c.pos += 1
        parts.append(_identifier(c))
    return "-".join(parts)


def _json_path(c: _Cursor) -> tuple[JsonStep, ...]:
    steps: list[JsonStep] = []
    while True:
        if c.eat("->>"):
            arrow = "->>"
        elif c.eat("->"):
            arrow = "->"
        else:
            return tuple(steps)
        m = _INDEX.match(c.text, c.pos)
        ends = m is not None and (
            m.end() == len(c.text) or c.text.startswith(("->", "::", ".", ",", ")"), m.end())
        )
        if m is not None and ends:
            c.pos = m.end()
            steps.append(JsonStep(arrow, m.group(0), True))
        else:
            steps.append(JsonStep(arrow, field_name(c), False))


def _field(c: _Cursor) -> Field:
    c.skip_ws()
    name = field_name(c)
    path = _json_path(c)
    c.skip_ws()
    return Field(name, path)


def _try_alias(c: _Cursor) -> str | None:
    start = c.pos
    try:
        alias = field_name(c)
    except ApiError:
        c.pos = start
        return None
    if c.peek() == ":" and not c.text.startswith("::", c.pos):
        c.pos += 1
        return alias
    c.pos = start
    return None


# -- select --------------------------------------------------------------------------------
def _select_end(c: _Cursor) -> None:
    c.skip_ws()
    if not (c.at_end() or c.peek() in ",)"):
        raise c.fail("',', ')' or end of input")


def _try_relation(c: _Cursor) -> SelectRelation | None:
    start = c.pos
    alias = _try_alias(c)
    try:
        name = field_name(c)
    except ApiError:
        c.pos = start
        return None
    hint: str | None = None
    join: str | None = None
    for _ in range(2):
        if not c.eat("!"):
            break
        if c.eat("inner"):
            join = "inner"
        elif c.eat("left"):
            join = "left"
        else:
            hint = field_name(c)
    c.skip_ws()
    if not c.eat("("):
        c.pos = start
        return None
    children = _select_forest(c)
    c.skip_ws()
    c.expect(")")
    c.skip_ws()
    return SelectRelation(name, alias, hint, join, children)


def _select_item(c: _Cursor) -> SelectItem:
    c.skip_ws()
    if c.text.startswith("..", c.pos):
        raise ApiError(400, "PGRST127", "Feature not implemented",
                       "Spread embedding ('..rel(...)') is not supported by this gateway")
    if c.eat("*"):
        _select_end(c)
        return SelectField(Field("*"))
    relation = _try_relation(c)
    if relation is not None:
        return relation
    alias = _try_alias(c)
    fld = _field(c)
    cast = _identifier(c) if c.eat("::") else None
    _select_end(c)
    return SelectField(fld, alias, cast)


def _select_forest(c: _Cursor) -> list[SelectItem]:
    items = [_select_item(c)]
    while True:
        c.skip_ws()
        if not c.eat(","):
            return items
        items.append(_select_item(c))


def parse_select(text: str) -> list[SelectItem]:
    c = _Cursor(text, "select parameter")
    items = _select_forest(c)
    if not c.at_end():
        raise c.fail("',' or end of input")
    return items


# -- filters ---------------------------------------------------------------------------------
def _list_val(c: _Cursor) -> tuple[str, ...]:
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
                quoted = _quoted(c)
                if c.at_end() or c.peek() in ",)":
                    value = quoted
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


def _logic_single_val(c: _Cursor) -> str:
    start = c.pos
    if c.peek() == '"':
        try:
            quoted = _quoted(c)
            if c.at_end() or c.peek() in ",)":
                return quoted
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


def _single_val(c: _Cursor, in_logic: bool) -> str:
    if in_logic:
        return _logic_single_val(c)
    value = c.rest()
    c.pos = len(c.text)
    return value


def _op_expr(c: _Cursor, in_logic: bool) -> OpExpr:
    negated = c.eat("not.")
    if c.eat("in."):
        return OpExpr(negated, "in", _list_val(c))
    if c.eat("is."):
        for tri in ("null", "unknown", "true", "false"):
            if c.rest()[: len(tri)].lower() == tri:
                c.pos += len(tri)
                return OpExpr(negated, "is", tri)
        raise c.fail("null or trilean value (unknown, true, false)")
    m = re.compile(r"[^.(]*").match(c.text, c.pos)
    assert m is not None
    name = m.group(0)
    if name in FTS_OPERATORS:
        c.pos = m.end()
        lang = None
        if c.eat("("):
            lang = _identifier(c)
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


def _tree_path(c: _Cursor) -> tuple[tuple[str, ...], Field]:
    names = [field_name(c)]
    while c.eat("."):
        names.append(field_name(c))
    path = _json_path(c)
    if not c.at_end():
        raise c.fail("'.', '->' or end of input")
    return tuple(names[:-1]), Field(names[-1], path)


def parse_filter(key: str, value: str) -> tuple[tuple[str, ...], Filter]:
    embed, fld = _tree_path(_Cursor(key, f"tree path ({key})"))
    return embed, Filter(fld, _op_expr(_Cursor(value, f"filter ({value})"), False))


def _logic_node(c: _Cursor) -> Filter | LogicTree:
    start = c.pos
    try:
        fld = _field(c)
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


def _logic_children(c: _Cursor) -> list[Filter | LogicTree]:
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
    c = _Cursor(value, f"logic tree ({value})")
    children = _logic_children(c)
    if not c.at_end():
        raise c.fail("end of input")
    return embed, LogicTree(negated, op, children)


# -- order and column lists ------------------------------------------------------------------
def _order_term(c: _Cursor) -> OrderTerm:
    c.skip_ws()
    start = c.pos
    relation: str | None = None
    try:
        name = field_name(c)
        if c.eat("("):
            fld = _field(c)
            c.expect(")")
            relation = name
        else:
            c.pos = start
    except ApiError:
        c.pos = start
    if relation is None:
        fld = _field(c)
    desc = False
    if c.eat(".asc"):
        desc = False
    elif c.eat(".desc"):
        desc = True
    nulls = "first" if c.eat(".nullsfirst") else "last" if c.eat(".nullslast") else None
    c.skip_ws()
    if not (c.at_end() or c.peek() == ","):
        raise c.fail('"asc", "desc", "nullsfirst" or "nullslast"')
    return OrderTerm(fld, relation, desc, nulls)


def parse_order(value: str) -> list[OrderTerm]:
    c = _Cursor(value, f"order ({value})")
    terms = [_order_term(c)]
    while c.eat(","):
        terms.append(_order_term(c))
    return terms


def parse_columns(value: str, what: str) -> list[str]:
    c = _Cursor(value, f"{what} parameter")
    names: list[str] = []
    while True:
        c.skip_ws()
        names.append(field_name(c))
        c.skip_ws()
        if not c.eat(","):
            break
    if not c.at_end():
        raise c.fail("',' or end of input")
    return names


@dataclass
class QueryParams:
    select: list[SelectItem] = field(default_factory=lambda: [SelectField(Field("*"))])
    filters: list[tuple[tuple[str, ...], Filter]] = field(default_factory=list)
    logic: list[tuple[tuple[str, ...], LogicTree]] = field(default_factory=list)
    order: dict[tuple[str, ...], list[OrderTerm]] = field(default_factory=dict)
    limit: dict[tuple[str, ...], int] = field(default_factory=dict)
    offset: dict[tuple[str, ...], int] = field(default_factory=dict)
    columns: list[str] | None = None
    on_conflict: list[str] | None = None
    rpc_args: list[tuple[str, str]] = field(default_factory=list)


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
