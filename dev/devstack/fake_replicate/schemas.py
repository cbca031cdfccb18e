"""Input-schema snapshots of the Replicate models the worker uses, and a validator.

One JSON file per model lives in ``schemas/`` (``owner__name.json``). Each holds the model's
input schema as an OpenAPI object (the ``openapi_schema.components.schemas.Input`` of the
real model, flattened: no ``$ref``/``allOf``), the output shape, whether the model is an
*official* model (called without a version, ``version: "hidden"`` in predictions) or a
*community* model pinned by a 64-hex version id, the native output format and notes on the
facts that are uncertain (the reference's [U] tags).

The validator mirrors what Replicate's API does before a prediction is created: it checks
the input against the JSON schema (Replicate uses a JSON-schema validator whose messages
look like ``Must be less than or equal to 4``) and answers with ``invalid_fields`` entries.
Real model schemas do not set ``additionalProperties: false``, so unknown inputs are *not*
an error: Replicate silently ignores them. ``check`` reports them as warnings so tests can
catch a worker sending a field the model will never read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).with_name("schemas")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
_URI = re.compile(r"^(https?://[^\s]+|data:[^\s,]*,.*)$", re.DOTALL)

InvalidField = dict[str, str]


@dataclass(frozen=True)
class ModelSchema:
    """One model's snapshot: input schema, output shape and how it is addressed."""

    model: str
    official: bool
    version: str | None
    native_format: str
    output: dict[str, Any]
    input_schema: dict[str, Any]
    sizing: str
    notes: tuple[str, ...] = field(default=())

    @property
    def owner(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.model.split("/", 1)[1]

    @property
    def version_id(self) -> str:
        """The prediction's ``version`` field: ``"hidden"`` for official models."""
        return "hidden" if self.official or self.version is None else self.version

    @property
    def output_is_list(self) -> bool:
        return self.output.get("type") == "array"

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        props: dict[str, dict[str, Any]] = self.input_schema.get("properties", {})
        return props

    @property
    def required(self) -> list[str]:
        req: list[str] = self.input_schema.get("required", [])
        return req

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.properties.items() if "default" in v}

    def with_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        """The input the model sees: defaults overlaid by the known given fields."""
        merged = self.defaults()
        merged.update({k: v for k, v in given.items() if k in self.properties})
        return merged


@dataclass(frozen=True)
class Validation:
    errors: list[InvalidField]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def _file_for(model: str) -> Path:
    return SCHEMA_DIR / (model.replace("/", "__") + ".json")


@cache
def known_models() -> list[str]:
    names = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        raw = json.loads(path.read_text())
        names.append(str(raw["model"]))
    return sorted(names)


@cache
def load(model: str) -> ModelSchema:
    """The snapshot of ``owner/name``; ``KeyError`` when the fake does not know it."""
    if model not in known_models():
        raise KeyError(model)
    raw = json.loads(_file_for(model).read_text())
    return ModelSchema(
        model=raw["model"],
        official=bool(raw["official"]),
        version=raw.get("version"),
        native_format=raw["native_format"],
        output=raw["output"],
        input_schema=raw["input"],
        sizing=raw.get("sizing", "flux"),
        notes=tuple(raw.get("notes", [])),
    )


def find(model: str) -> ModelSchema | None:
    try:
        return load(model)
    except KeyError:
        return None


def model_for_version(version: str) -> str | None:
    """Resolve a ``version`` of ``POST /v1/predictions`` to ``owner/name``.

    Accepts a bare 64-hex id, ``owner/name:<hex>`` (the hex must be that model's version) and
    ``owner/name`` (official models only). Anything else is ``None``.
    """
    if not isinstance(version, str):
        return None
    if HEX64.match(version):
        for name in known_models():
            if load(name).version == version:
                return name
        return None
    if ":" in version:
        name, _, vid = version.partition(":")
        schema = find(name)
        if schema is not None and schema.version is not None and schema.version == vid:
            return name
        return None
    schema = find(version)
    return version if schema is not None and schema.official else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if math.isfinite(value) and value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(expected: str, value: Any) -> bool:
    given = _json_type(value)
    if expected == "number":
        return given in ("number", "integer")
    return given == expected


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _enum_text(values: list[Any]) -> str:
    return ", ".join(json.dumps(v) for v in values)


def _check_value(
    name: str, path: str, spec: dict[str, Any], value: Any, out: list[InvalidField]
) -> None:
    expected = spec.get("type")
    if expected and not _type_ok(expected, value):
        out.append(
            {
                "type": "type",
                "field": path,
                "description": f"Invalid type. Expected: {expected}, given: {_json_type(value)}",
            }
        )
        return
    if "enum" in spec and value not in spec["enum"]:
        out.append(
            {
                "type": "enum",
                "field": path,
                "description": f"{name} must be one of the following: {_enum_text(spec['enum'])}",
            }
        )
        return
    if expected in ("integer", "number"):
        if "minimum" in spec and value < spec["minimum"]:
            out.append(
                {
                    "type": "minimum",
                    "field": path,
                    "description": f"Must be greater than or equal to {_num(spec['minimum'])}",
                }
            )
        if "maximum" in spec and value > spec["maximum"]:
            out.append(
                {
                    "type": "maximum",
                    "field": path,
                    "description": f"Must be less than or equal to {_num(spec['maximum'])}",
                }
            )
    if expected == "string" and spec.get("format") == "uri" and not _URI.match(value):
        out.append({"type": "format", "field": path, "description": "Does not match format 'uri'"})
    if expected == "array":
        _check_array(name, path, spec, value, out)


def _check_array(
    name: str, path: str, spec: dict[str, Any], value: list[Any], out: list[InvalidField]
) -> None:
    if "minItems" in spec and len(value) < spec["minItems"]:
        out.append(
            {
                "type": "minItems",
                "field": path,
                "description": f"Array must have at least {spec['minItems']} items",
            }
        )
    if "maxItems" in spec and len(value) > spec["maxItems"]:
        out.append(
            {
                "type": "maxItems",
                "field": path,
                "description": f"Array must have at most {spec['maxItems']} items",
            }
        )
    items = spec.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _check_value(f"{name}.{i}", f"{path}.{i}", items, item, out)


def check(model: str, given: Any) -> Validation:
    """Validate ``given`` against the model's snapshot: errors and ignored-field warnings."""
    schema = load(model)
    errors: list[InvalidField] = []
    if not isinstance(given, dict):
        given_type = _json_type(given)
        errors.append(
            {
                "type": "type",
                "field": "input",
                "description": f"Invalid type. Expected: object, given: {given_type}",
            }
        )
        return Validation(errors, [])
    for name in schema.required:
        if name not in given:
            errors.append(
                {"type": "required", "field": f"input.{name}", "description": f"{name} is required"}
            )
    warnings: list[str] = []
    for name, value in given.items():
        spec = schema.properties.get(name)
        if spec is None:
            warnings.append(f"input.{name}: unknown input ignored by {model}")
            continue
        _check_value(name, f"input.{name}", spec, value, errors)
    return Validation(errors, warnings)


def validate(model: str, given: Any) -> list[InvalidField]:
    """Replicate-style ``invalid_fields`` entries for ``given``; ``[]`` when it is valid."""
    return check(model, given).errors


def unknown_fields(model: str, given: dict[str, Any]) -> list[str]:
    """Input names the model's schema does not declare (Replicate ignores them)."""
    props = load(model).properties
    return [k for k in given if k not in props]


def problem_detail(errors: list[InvalidField]) -> str:
    """The 422 body's ``detail``: one ``- field: description`` line per error."""
    return "\n".join(f"- {e['field']}: {e['description']}" for e in errors)
