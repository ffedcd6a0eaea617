"""The model's arguments, checked against the tool's JSON Schema before anything is called."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from voice.engines.contracts import ToolSpec
from voice.errors import ToolArgumentsError

# The model reads the message and may try again: one short line, not a dump of its input.
_MAX_MESSAGE = 200


def validate(spec: ToolSpec, arguments_json: str) -> dict[str, Any]:
    """The arguments as a dict, or :class:`ToolArgumentsError` saying what is wrong (not
    JSON, not an object, or which argument breaks the schema and how)."""
    name = spec.name
    try:
        # Empty arguments: some models send "" for a function without parameters.
        arguments = json.loads(arguments_json.strip() or "{}", parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        why = f"{exc.msg} at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
        raise ToolArgumentsError(
            f"arguments for {name} are not valid JSON ({why})", tool=name
        ) from None
    if not isinstance(arguments, dict):
        raise ToolArgumentsError(
            f"arguments for {name} must be a JSON object, not {type(arguments).__name__}",
            tool=name,
        )
    schema = spec.parameters
    checker = validator_for(schema, default=Draft202012Validator)(schema)
    error = best_match(checker.iter_errors(arguments))
    if error is not None:
        where = error.json_path.removeprefix("$")
        raise ToolArgumentsError(_short(f"arguments for {name}{where}: {error.message}"), tool=name)
    return arguments


def _no_constant(word: str) -> None:
    # json.loads takes NaN and Infinity, which no JSON reader on the other side would.
    raise ValueError(f"{word} is not a JSON number")


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
