#!/usr/bin/env python3
"""Check that every role's meta/argument_specs.yml matches its defaults/main.yml.

For each role:
- every variable in defaults/main.yml is documented in the `main` entry point,
  and every option of the `main` entry point that has a default is in defaults;
- the defaults agree (same value, or the same template text);
- every entry point has a short_description and a description;
- every int, float and bool option's default is a literal of that type;
- every public variable is prefixed with the role name, every option and
  suboption has a description and a type, and every option that looks like a
  secret (password, passphrase, token, private key content, API key) is no_log;
- every entry point other than `main` has its tasks file (tasks/<entry>.yml);
- every variable in vars/ is a derived one, named `_<role>_*`.
Every directory under roles/ is a role and is checked, new ones included; a
role without meta/argument_specs.yml is a problem.
Exits non-zero with one line per problem.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Scalar types whose default must be a literal: antsibull-docs refuses a template
# there (a list or dict option may default to a template such as "{{ groups['all'] }}").
TYPES = {"int": int, "float": (int, float), "bool": bool}
SECRET = re.compile(r"(password|passphrase|token|secret|key_content|^key$)")


def check_options(where: str, options: dict) -> list[str]:
    """Descriptions, types and no_log of options and, recursively, their suboptions."""
    problems: list[str] = []
    for opt, ospec in (options or {}).items():
        ospec = ospec or {}
        if not ospec.get("description"):
            problems.append(f"{where}: option {opt} has no description")
        if not ospec.get("type"):
            problems.append(f"{where}: option {opt} has no type")
        kind = ospec.get("type")
        default = ospec.get("default")
        if kind in TYPES and default is not None and (
                not isinstance(default, TYPES[kind]) or (kind != "bool" and isinstance(default, bool))):
            problems.append(f"{where}: option {opt} is of type {kind} but its default {default!r} is not "
                            "(antsibull-docs needs a literal; say in the description where the value comes from)")
        if SECRET.search(opt) and ospec.get("type") == "str" and not ospec.get("no_log"):
            problems.append(f"{where}: option {opt} looks like a secret but is not no_log")
        if ospec.get("options"):
            problems.extend(check_options(f"{where}.{opt}", ospec["options"]))
    return problems


def check_role(role: Path) -> list[str]:
    problems: list[str] = []
    name = role.name
    spec_file = role / "meta" / "argument_specs.yml"
    defaults_file = role / "defaults" / "main.yml"
    if not spec_file.exists():
        return [f"{name}: meta/argument_specs.yml is missing"]
    specs = (yaml.safe_load(spec_file.read_text()) or {}).get("argument_specs", {})
    if "main" not in specs:
        problems.append(f"{name}: argument_specs has no 'main' entry point")
    defaults = {}
    if defaults_file.exists():
        defaults = yaml.safe_load(defaults_file.read_text()) or {}
    for entry, spec in specs.items():
        options = spec.get("options", {}) or {}
        if not spec.get("short_description"):
            problems.append(f"{name}:{entry}: no short_description")
        if not spec.get("description"):
            problems.append(f"{name}:{entry}: no description (ansible-doc and antsibull-docs need one)")
        if entry != "main" and not (role / "tasks" / f"{entry}.yml").exists():
            problems.append(f"{name}:{entry}: entry point has no tasks/{entry}.yml")
        problems.extend(check_options(f"{name}:{entry}", options))
        for opt, ospec in options.items():
            if not opt.startswith(f"{name}_"):
                problems.append(f"{name}:{entry}: option {opt} is not prefixed with '{name}_'")
            if "default" in ospec and opt in defaults and ospec["default"] != defaults[opt]:
                problems.append(
                    f"{name}:{entry}: option {opt} defaults to {ospec['default']!r} in argument_specs "
                    f"but {defaults[opt]!r} in defaults/main.yml")
    main_opts = (specs.get("main", {}) or {}).get("options", {}) or {}
    for var in defaults:
        if not var.startswith(f"{name}_"):
            problems.append(f"{name}: default {var} is not prefixed with '{name}_'")
        if var not in main_opts:
            problems.append(f"{name}: default {var} is not documented in argument_specs 'main'")
    for opt, ospec in main_opts.items():
        if "default" in ospec and opt not in defaults:
            problems.append(f"{name}: option {opt} has a default in argument_specs but not in defaults/main.yml")
        if ospec.get("required") and opt in defaults:
            problems.append(f"{name}: option {opt} is required but also has a default")
    for vars_file in sorted((role / "vars").glob("*.yml")):
        for var in (yaml.safe_load(vars_file.read_text()) or {}):
            if not var.startswith(f"_{name}_"):
                problems.append(f"{name}: {vars_file.relative_to(role)} variable {var} is not named '_{name}_*'")
    return problems


def main() -> int:
    roles = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not roles:
        print("argument_specs: no roles found under roles/")
        return 1
    problems = [p for role in roles for p in check_role(role)]
    for p in problems:
        print(p)
    print(f"argument_specs: {len(roles)} roles checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
