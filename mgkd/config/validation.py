"""The one validation layer of the experiment config and the sweep file, on pydantic.

Both schemas are plain dataclasses whose annotations carry pydantic constraints; a :class:`Schema`
validates a mapping into one with a ``TypeAdapter`` and turns pydantic's ``ValidationError`` into
the one-paragraph :class:`~mgkd.errors.ConfigError` users read: the key (``granularities[1].dim``),
what was wrong, what is allowed and, from the field's ``description``, what to give instead.

Conventions the translator relies on:

* a field's ``Field(description=...)`` says what the key holds; it follows the problem in brackets;
* a dataclass may set ``KEY_HINT`` (a ClassVar): it follows unknown- or missing-key messages;
* a custom check raises ``PydanticCustomError`` with a message that is shown as it is; a check of
  several fields (a model validator) starts its message with the key it blames.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import annotated_types as at
from pydantic import AfterValidator, BeforeValidator, Field, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from mgkd.errors import ConfigError

T = TypeVar("T")


def _whole_float_as_int(value: Any) -> Any:
    """3.0 is the integer 3 (YAML writes some integers so); 3.5 stays and is rejected."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _none_as_empty(empty: type) -> BeforeValidator:
    """A key written with no value (``base:`` in YAML) means the empty mapping / list."""
    return BeforeValidator(lambda value: empty() if value is None else value)


# Strict values: a bool is not a number, a string is not a number, a number is not a string.
Int = Annotated[int, BeforeValidator(_whole_float_as_int), Strict()]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Name = Annotated[str, Strict(), Field(pattern=r"\S", description="a name that is not blank")]
EMPTY_MAPPING_IF_NONE = _none_as_empty(dict)
EMPTY_LIST_IF_NONE = _none_as_empty(list)
Options = Annotated[dict, EMPTY_MAPPING_IF_NONE]


def _check_auto_bool(value: Any) -> Any:
    if value == "auto" or isinstance(value, bool):
        return value
    raise PydanticCustomError("auto_bool", "expected auto, true or false, got {value}.",
                              {"value": repr(value)})


def _check_auto_count(value: Any) -> Any:
    value = _whole_float_as_int(value)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and 1 <= value <= 65_536):
        return value
    raise PydanticCustomError("auto_count", "expected auto or an integer from 1 to 65536, got "
                              "{value}.", {"value": repr(value)})


# ``auto`` (decided per run, e.g. on for CUDA), or an explicit value.
AutoBool = Annotated[Union[Literal["auto"], bool], BeforeValidator(_check_auto_bool)]
AutoCount = Annotated[Union[Literal["auto"], int], BeforeValidator(_check_auto_count)]


def one_of(names: tuple[str, ...]) -> AfterValidator:
    """Annotation metadata: the value must be one of ``names`` (listed in the error)."""
    def check(value: str) -> str:
        if value not in names:
            raise PydanticCustomError("unknown_name", "unknown value '{value}'; allowed: {allowed}.",
                                      {"value": value, "allowed": ", ".join(names)})
        return value
    return AfterValidator(check)


def fail(message: str) -> typing.NoReturn:
    """Raise from a pydantic validator a message shown as it is (braces need no escaping)."""
    raise PydanticCustomError("check", "{message}", {"message": message})


# ---- where an error is: the dataclass holding the key and the key's constraints ----------------
@dataclass
class _Spot:
    owner: type | None = None  # the dataclass that holds the key
    description: str | None = None
    bounds: list[Any] = field(default_factory=list)  # annotated_types Ge / Gt / Le / Lt


def _strip(hint: Any) -> Any:
    """The type under Annotated[...] and ``X | None``."""
    while True:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is Annotated:
            hint = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            hint = rest[0] if len(rest) == 1 else Any
        else:
            return hint


def value_type(cls: type, name: str) -> Any:
    """The plain type of field ``name`` of dataclass ``cls``: ``int`` for ``Annotated[Int, ...] |
    None``, ``list[Granularity]`` for a list."""
    return _strip(typing.get_type_hints(cls, include_extras=True)[name])


def _metadata(hint: Any) -> list[Any]:
    """Every Annotated item on ``hint``, through ``X | None``, FieldInfo unpacked, inner first."""
    found: list[Any] = []
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:  # inner first: the outermost (latest) description wins
        found += _metadata(args[0])
        found += [item for extra in hint.__metadata__
                  for item in ([extra, *extra.metadata] if isinstance(extra, FieldInfo) else [extra])]
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            found += _metadata(arg)
    return found


def _locate(root: type, loc: tuple[int | str, ...]) -> _Spot:
    spot, hint = _Spot(), root
    for part in loc:
        hint = _strip(hint)
        if isinstance(part, int):
            args = typing.get_args(hint)
            hint = args[0] if args else Any
            continue
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return _Spot(owner=spot.owner)
        spot.owner = hint
        hints = typing.get_type_hints(hint, include_extras=True)
        name = next((n for n in hints if _key_name(spot.owner, n) == part), part)
        hint = hints.get(name, Any)
    items = _metadata(hint)
    spot.description = next((i.description for i in reversed(items)
                             if isinstance(i, FieldInfo) and i.description), None)
    spot.bounds = [i for i in items if isinstance(i, (at.Ge, at.Gt, at.Le, at.Lt))]
    return spot


# ---- the translator ----------------------------------------------------------------------------
_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "finite_number": "a finite number", "string_type": "a string",
             "bool_type": "true or false", "list_type": "a list", "too_short": "a non-empty list",
             "dict_type": "a mapping", "dataclass_type": "a mapping"}
_UNKNOWN_KEY = ("unexpected_keyword_argument", "extra_forbidden")
_MISSING_KEY = ("missing", "missing_argument")


def _where(loc: tuple[int | str, ...]) -> str:
    """``('granularities', 1, 'dim')`` -> ``granularities[1].dim``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _range_text(bounds: list[Any]) -> str:
    low = next((b for b in bounds if isinstance(b, (at.Ge, at.Gt))), None)
    high = next((b for b in bounds if isinstance(b, (at.Le, at.Lt))), None)
    low_value = None if low is None else getattr(low, "ge", getattr(low, "gt", None))
    high_value = None if high is None else getattr(high, "le", getattr(high, "lt", None))
    if low is not None and high is not None:
        return (f"{'(' if isinstance(low, at.Gt) else '['}{low_value}, {high_value}"
                f"{')' if isinstance(high, at.Lt) else ']'}")
    if low is not None:
        return f"greater than {low_value}" if isinstance(low, at.Gt) else f"{low_value} or more"
    return f"less than {high_value}" if isinstance(high, at.Lt) else f"at most {high_value}"


def _key_name(owner: type, name: str) -> str:
    """The key users write for field ``name``: its alias when it has one (``from`` for ``from_``)."""
    hint = typing.get_type_hints(owner, include_extras=True).get(name)
    alias = next((i.alias for i in _metadata(hint) if isinstance(i, FieldInfo) and i.alias), None)
    return alias or name


def _keys_problem(kind: str, errors: list[dict[str, Any]], spot: _Spot) -> str:
    names = [str(e["loc"][-1]) for e in errors]
    allowed = [_key_name(spot.owner, f.name) for f in dataclasses.fields(spot.owner)] if spot.owner else []
    text = (f"unknown key(s) {names}; allowed keys: {', '.join(allowed)}" if kind == "unknown"
            else f"missing required key(s) {names}")
    hint = getattr(spot.owner, "KEY_HINT", None)
    return text + (f"; {hint}" if hint else "") + "."


def _problem(error: dict[str, Any], spot: _Spot) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    about = f" ({spot.description})" if spot.description else ""
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {value!r}{about}."
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{value} is out of range; allowed: {_range_text(spot.bounds)}{about}."
    if kind == "too_long":
        return f"{ctx.get('actual_length')} entries; allowed: 0 to {ctx.get('max_length')}{about}."
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not allowed{about or ' (' + str(ctx.get('pattern')) + ')'}."
    return error["msg"]  # our own checks' messages, and pydantic's one-line ones


def to_config_error(error: ValidationError, root: type, prefix: str = "") -> ConfigError:
    """One paragraph for the first problem pydantic found (all unknown keys of it at once)."""
    errors = error.errors()
    for kinds, label in ((_UNKNOWN_KEY, "unknown"), (_MISSING_KEY, "missing")):
        keyed = [e for e in errors if e["type"] in kinds]
        if keyed:
            parent = keyed[0]["loc"][:-1]
            same = [e for e in keyed if e["loc"][:-1] == parent]
            where, problem = _where(parent), _keys_problem(label, same, _locate(root, keyed[0]["loc"]))
            break
    else:
        first = errors[0]
        where, problem = _where(first["loc"]), _problem(first, _locate(root, first["loc"]))
        if not where and first["type"] == "check":  # a check of several keys names its key itself
            return ConfigError(f"{prefix} {problem}".strip())
    head = " ".join(part for part in (prefix, where) if part)
    return ConfigError(f"{head}: {problem}" if head else problem)


@dataclass(frozen=True)
class Schema(Generic[T]):
    """Validates plain data into the dataclass ``root``; errors are ConfigErrors.

    ``prefix`` starts every message (``"sweep"`` -> ``sweep num_samples: ...``).
    """

    root: type[T]
    prefix: str = ""
    adapter: TypeAdapter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.root))

    def parse(self, data: Any) -> T:
        try:
            return self.adapter.validate_python(data)
        except ValidationError as err:
            raise to_config_error(err, self.root, self.prefix) from None
