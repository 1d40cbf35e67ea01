"""A recipe's YAML and flags, parsed with one-line errors; the stage scripts' entry point.

    if __name__ == "__main__":
        run_stage(main, TrlParser((SFTScriptArguments, SFTConfig, ModelConfig)))

``parse_recipe`` wraps ``TrlParser.parse_args_and_config``. TrlParser reports a typo in a YAML key as
``Unknown arguments from config file: ['--per_device_train_batchsize', '4']`` under a traceback, a
broken YAML file as a parser traceback, and does not check YAML values at all: it makes them argparse
defaults, which argparse never converts, so ``per_device_train_batch_size: 8.5`` reaches the trainer
as a float. Here the YAML is read first and checked against the parser's own arguments, and every
error ends the run with one line that names the file, the line or the key, and what was expected
(the closest known key where one is close). ``OPENMEDIX_DEBUG=1`` shows the traceback instead; there
is no ``--debug`` flag because TrainingArguments already has a ``--debug`` option.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import yaml

from data_prep.errors import OpenMedixError, debug_enabled, one_line

CONFIG_FLAG = "--config"
# keys TrlParser takes from the YAML besides the dataclass fields
EXTRA_KEYS = ("env",)


class RecipeError(OpenMedixError, ValueError):
    """A recipe's YAML or flags are wrong; the message is the whole explanation."""


def run_stage(main, parser, argv: list[str] | None = None) -> None:
    """Parse the recipe and run ``main(*dataclasses)``. A project error (a bad recipe, dataset or
    checkpoint) ends the run with its one-line message and exit status 1; OPENMEDIX_DEBUG=1 shows
    the traceback instead."""
    try:
        main(*parse_recipe(parser, argv))
    except OpenMedixError as e:
        if debug_enabled():
            raise
        raise SystemExit(one_line(e)) from None


def parse_recipe(parser, argv: list[str] | None = None) -> tuple:
    """``parser.parse_args_and_config(argv)`` (argv: default sys.argv[1:]), or RecipeError(one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = None
    try:
        config = config_path(argv)
        if config is not None:
            check_config(parser, config)
        *parsed, unknown = parser.parse_args_and_config(argv, return_remaining_strings=True)
        if unknown:
            raise RecipeError(unknown_flags(parser, unknown))
        return tuple(parsed)
    except (ValueError, TypeError) as e:  # RecipeError, or a dataclass refusing a value
        if debug_enabled():
            raise
        if isinstance(e, RecipeError):
            raise
        where = str(config) if config else "recipe"
        if flags := [a for a in argv if a.startswith("--") and a != CONFIG_FLAG]:
            where += f" with flags {' '.join(flags)}"  # the value may come from either
        raise RecipeError(f"{where}: {one_line(e)}") from None


def config_path(argv: list[str]) -> Path | None:
    """The file after --config (TrlParser's own rule: a separate argument), or None."""
    if CONFIG_FLAG not in argv:
        return None
    i = argv.index(CONFIG_FLAG)
    if i + 1 >= len(argv):
        raise RecipeError(f"{CONFIG_FLAG} needs a YAML file, e.g. {CONFIG_FLAG} recipes/demo/sft.yaml")
    return Path(argv[i + 1])


def read_config(path: Path) -> dict:
    """The recipe YAML as a mapping; RecipeError names the file (and the line of a syntax error)."""
    if not path.is_file():
        near = difflib.get_close_matches(path.name, [p.name for p in path.parent.glob("*.yaml")], n=1)
        hint = f" (did you mean {path.parent / near[0]}?)" if near else ""
        raise RecipeError(f"{path}: no such recipe file{hint}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem, context = getattr(e, "problem", None), getattr(e, "context", None)
        what = f"{problem} ({context})" if problem and context else problem or e
        raise RecipeError(f"{where}: not valid YAML: {one_line(what)}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values, got {type(config).__name__}")
    return config


def check_config(parser, path: Path) -> dict:
    """Every key a known argument, every scalar value of its argument's type; returns the config."""
    config = read_config(path)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    unknown = [str(k) for k in config if k not in actions and k not in EXTRA_KEYS]
    if unknown:
        names = ", ".join(f"'{k}'{suggest(k, actions)}" for k in unknown)
        raise RecipeError(f"{path}: unknown key(s) {names}; flags and keys are the dataclass fields")
    for key, value in config.items():
        if key in actions and (expected := type_problem(actions[key], value)):
            hint = ""
            if isinstance(value, bool) and actions[key].choices:  # `eval_strategy: no` reads as False
                hint = " (YAML reads unquoted yes/no/on/off as true/false: quote it)"
            raise RecipeError(f"{path}: {key}: expected {expected}, got {value!r}{hint}")
    return config


def suggest(key: str, known) -> str:
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    return f" (did you mean '{near[0]}'?)" if near else ""


def type_problem(action: argparse.Action, value) -> str | None:
    """What the argument expects when ``value`` is not that, else None. argparse converts strings given
    on the command line; a YAML value arrives already typed (or as a string YAML could not type, such as
    1e-5), so it is checked here. Dicts and lists of strings are left to the dataclass."""
    from transformers.hf_argparser import string_to_bool

    if value is None:
        return None
    values = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
    for v in values:
        if action.choices is not None:
            choices = [str(c) for c in action.choices]
            if str(v) not in choices or isinstance(v, bool):
                return f"one of {', '.join(choices)}"
        elif action.type is int:
            if isinstance(v, bool) or not (isinstance(v, int) or _parses(int, v)):
                return "a whole number"
        elif action.type is float:
            if isinstance(v, bool) or not (isinstance(v, (int, float)) or _parses(float, v)):
                return "a number"
        elif action.type is string_to_bool:
            if not (isinstance(v, bool) or _parses(string_to_bool, v)):
                return "true or false"
    return None


def _parses(convert, v) -> bool:
    if not isinstance(v, str):
        return False
    try:
        convert(v)
    except (ValueError, argparse.ArgumentTypeError):
        return False
    return True


def unknown_flags(parser, remaining: list[str]) -> str:
    flags = [s for s in remaining if s.startswith("-")] or remaining
    options = [o for a in parser._actions for o in a.option_strings]
    names = ", ".join(f"{f}{suggest(f.split('=')[0], options)}" for f in flags)
    return f"unknown flag(s) {names}; flags override the recipe's keys and are the dataclass fields"
