"""The parsed form of a PostgREST query string (see query_parse for the grammar)."""

from __future__ import annotations

from dataclasses import dataclass, field

OPERATORS = frozenset(
    {
        "eq",
        "gte",
        "gt",
        "lte",
        "lt",
        "neq",
        "like",
        "ilike",
        "cs",
        "cd",
        "ov",
        "sl",
        "sr",
        "nxr",
        "nxl",
        "adj",
        "match",
        "imatch",
        "isdistinct",
    }
)
FTS_OPERATORS = frozenset({"fts", "plfts", "phfts", "wfts"})
QUANTIFIABLE = frozenset({"eq", "gt", "gte", "lt", "lte", "like", "ilike", "match", "imatch"})


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
