"""Command-line options from a config dataclass, for every entry point (training, prior capabilities, the OpenAI
client's builders): one `--field-name` per field, its help the docstring written under the field.

One way to write each kind of value: numbers and strings as themselves, booleans as true/false (also 1/0, yes/no),
"none" for an optional field's None, a list as several values (`--lora-target-modules q_proj v_proj`)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, Callable


def field_docs(config_class: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass and of the dataclasses it extends."""
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__[:-1]):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError):
            continue
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


# Each field type's parser, and what the error says it expected.
PARSERS: dict[type, tuple[Callable[[str], Any], str]] = {
    bool: (parse_bool, "true or false"), int: (int, "an integer"), float: (float, "a float"), str: (str, "a string")}


def _value_parser(kind: Any, optional: bool) -> Callable[[str], Any]:
    if kind not in PARSERS:
        raise TypeError(f"no command-line parser for fields of type {kind!r}")
    parse, expected = PARSERS[kind]
    expected += " or none" if optional else ""

    def parse_value(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            return parse(text)
        except ValueError:
            # argparse prints an ArgumentTypeError's message as it is (it names a plain ValueError's parser instead).
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse_value


def add_field_options(parser: argparse.ArgumentParser, config_class: type, skip: tuple[str, ...] = (),
                      given_only: bool = False) -> None:
    """One option per field of `config_class` (but `skip`). given_only: every default is None, so that the parsed
    namespace holds only what the command line gave (the caller layers it over a preset); otherwise each option's
    default is the field's and the help says it."""
    docs, hints = field_docs(config_class), typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        kind = hints[field.name]
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
        if optional:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        default = None if given_only else field.default
        help_text = docs.get(field.name, "") + ("" if given_only else f" (default: {field.default!r})")
        options = {"dest": field.name, "default": default, "help": help_text.replace("%", "%%")}
        if typing.get_origin(kind) is list:
            options.update(nargs="+", type=_value_parser(typing.get_args(kind)[0], optional=False))
        else:
            options.update(type=_value_parser(kind, optional))
        parser.add_argument("--" + field.name.replace("_", "-"), **options)


def config_from_argv(config_class: type, argv: list[str] | None = None, description: str | None = None):
    """An entry point's config dataclass from `--field-name value` options; `--help` documents each field."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_field_options(parser, config_class)
    return config_class(**vars(parser.parse_args(argv)))
