"""Parsers for PostgREST's query-string grammar (a port of ApiRequest/QueryParams.hs).

    select=id,alias:col->key::text,images!inner(url)     select forest
    order=col.desc.nullslast,rel(col).asc                 order terms
    columns="a","b"   on_conflict=id                      column lists

Field names, JSON paths and the cursor are shared with filter_parse (filters, logic trees).
Everything here is pure parsing: names are checked against the schema cache later.
"""

from __future__ import annotations

import re

from devstack.rest.errors import ApiError, parse_error
from devstack.rest.query_ast import (
    Field,
    JsonStep,
    OrderTerm,
    SelectField,
    SelectItem,
    SelectRelation,
)

_INDEX = re.compile(r"-?\d+")


class Cursor:
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
def quoted(c: Cursor) -> str:
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


def identifier(c: Cursor) -> str:
    start = c.pos
    while not c.at_end() and (c.peek().isalnum() or c.peek() in "_ $"):
        c.pos += 1
    if c.pos == start:
        raise c.fail("field name (* or [a..z0..9_$])")
    return c.text[start:c.pos].strip()


def field_name(c: Cursor) -> str:
    if c.peek() == '"':
        return quoted(c)
    parts = [identifier(c)]
    while c.peek() == "-" and not c.text.startswith("->", c.pos):
        c.pos += 1
        parts.append(identifier(c))
    return "-".join(parts)


def json_path(c: Cursor) -> tuple[JsonStep, ...]:
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


def field(c: Cursor) -> Field:
    c.skip_ws()
    name = field_name(c)
    path = json_path(c)
    c.skip_ws()
    return Field(name, path)


def _try_alias(c: Cursor) -> str | None:
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
def _select_end(c: Cursor) -> None:
    c.skip_ws()
    if not (c.at_end() or c.peek() in ",)"):
        raise c.fail("',', ')' or end of input")


def _try_relation(c: Cursor) -> SelectRelation | None:
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


def _select_item(c: Cursor) -> SelectItem:
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
    fld = field(c)
    cast = identifier(c) if c.eat("::") else None
    _select_end(c)
    return SelectField(fld, alias, cast)


def _select_forest(c: Cursor) -> list[SelectItem]:
    items = [_select_item(c)]
    while True:
        c.skip_ws()
        if not c.eat(","):
            return items
        items.append(_select_item(c))


def parse_select(text: str) -> list[SelectItem]:
    c = Cursor(text, "select parameter")
    items = _select_forest(c)
    if not c.at_end():
        raise c.fail("',' or end of input")
    return items


# -- filters ---------------------------------------------------------------------------------
# -- order and column lists ------------------------------------------------------------------
def _order_term(c: Cursor) -> OrderTerm:
    c.skip_ws()
    start = c.pos
    relation: str | None = None
    try:
        name = field_name(c)
        if c.eat("("):
            fld = field(c)
            c.expect(")")
            relation = name
        else:
            c.pos = start
    except ApiError:
        c.pos = start
    if relation is None:
        fld = field(c)
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
    c = Cursor(value, f"order ({value})")
    terms = [_order_term(c)]
    while c.eat(","):
        terms.append(_order_term(c))
    return terms


def parse_columns(value: str, what: str) -> list[str]:
    c = Cursor(value, f"{what} parameter")
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
