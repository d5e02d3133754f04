#!/usr/bin/env python3
"""Write each role's variables table into its README from meta/argument_specs.yml.

meta/argument_specs.yml is the one list of a role's variables. For every role
under roles/, this script renders one table per entry point (main first, then
the others in the order the file lists them: upstream, drain, rollback ...)
with each option's name, type, default, whether it is required, its choices
and its description; suboptions follow their parent as `parent[].name` (list
of dicts) or `parent.name` (dict).

The table goes between the two marker lines

    <!-- BEGIN GENERATED: variables -->
    <!-- END GENERATED: variables -->

and nothing else in the README changes. A README without the markers gets a
"## Variables" section holding them, before "## Example" when there is one,
else at the end.

Usage:
    scripts/role_docs.py            rewrite the READMEs that are stale
    scripts/role_docs.py --check    write nothing; exit 1 naming each stale README
    scripts/role_docs.py ROLE ...   only these roles (names or paths)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- BEGIN GENERATED: variables -->"
END = "<!-- END GENERATED: variables -->"
NOTE = ("<!-- Made by scripts/role_docs.py from meta/argument_specs.yml: edit that file, "
        "then run `make docs`. -->")
# Ansible's documentation markup in descriptions, as Markdown.
MARKUP_CODE = re.compile(r"\b[CVOEM]\(([^()]*)\)")
MARKUP_EMPH = re.compile(r"\b[IB]\(([^()]*)\)")
HEADER = ("| Variable | Type | Default | Required | Choices | Description |\n"
          "| --- | --- | --- | --- | --- | --- |")


def _text(value) -> str:
    """A description or short_description as one table-safe line."""
    if value is None:
        return ""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    text = MARKUP_CODE.sub(r"`\1`", text)
    text = MARKUP_EMPH.sub(r"*\1*", text)
    return text.replace("|", "\\|")


def _code(value) -> str:
    """A value as inline code that survives the table (pipes escaped)."""
    if isinstance(value, str):
        shown = value if value != "" else '""'
    else:
        shown = json.dumps(value, ensure_ascii=False)
    shown = shown.replace("|", "\\|")
    fence = "``" if "`" in shown else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def _type(spec: dict) -> str:
    kind = spec.get("type", "str")
    if kind == "list" and spec.get("elements"):
        return f"list of {spec['elements']}"
    return kind


def _rows(options: dict, prefix: str = "") -> list[str]:
    rows = []
    for name, spec in (options or {}).items():
        spec = spec or {}
        full = f"{prefix}{name}"
        default = _code(spec["default"]) if "default" in spec else ""
        required = "yes" if spec.get("required") else "no"
        choices = ", ".join(_code(c) for c in spec.get("choices", []) or [])
        desc = _text(spec.get("description"))
        if spec.get("no_log"):
            desc = f"{desc} Secret: never logged (no_log); keep it in Vault.".strip()
        rows.append(f"| `{full}` | {_type(spec)} | {default} | {required} | {choices} | {desc} |")
        if spec.get("options"):
            sep = "[]." if spec.get("type") == "list" else "."
            rows.extend(_rows(spec["options"], f"{full}{sep}"))
    return rows


def render(role: Path) -> str:
    """The block between the markers, markers included, for one role."""
    specs = (yaml.safe_load((role / "meta" / "argument_specs.yml").read_text()) or {})
    specs = specs.get("argument_specs", {}) or {}
    entries = sorted(specs, key=lambda e: (e != "main", list(specs).index(e)))
    parts = [BEGIN, NOTE, ""]
    for entry in entries:
        spec = specs[entry] or {}
        how = ("`roles: [modelops.serving." + role.name + "]`" if entry == "main"
               else f"`tasks_from: {entry}`")
        parts.append(f"### Entry point `{entry}` ({how})")
        parts.append("")
        if spec.get("short_description"):
            parts.append(_text(spec["short_description"]))
            parts.append("")
        rows = _rows(spec.get("options", {}))
        if rows:
            parts.append(HEADER)
            parts.extend(rows)
        else:
            parts.append("No variables.")
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def updated(readme_text: str, block: str) -> str:
    """The README with its generated block replaced (or a Variables section added)."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    found = pattern.findall(readme_text)
    if len(found) > 1:
        raise ValueError("more than one generated variables block")
    if found:
        return pattern.sub(lambda _m: block, readme_text, count=1)
    section = f"## Variables\n\n{block}\n\n"
    example = re.search(r"^## Example", readme_text, re.M)
    if example:
        return readme_text[:example.start()] + section + readme_text[example.start():]
    return readme_text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"


def roles_to_do(root: Path, names: list[str]) -> list[Path]:
    if names:
        return [root / "roles" / Path(n).name for n in names]
    return sorted(p for p in (root / "roles").iterdir() if p.is_dir() and not p.name.startswith("."))


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming each README that is stale")
    parser.add_argument("roles", nargs="*", help="role names (default: every role under roles/)")
    args = parser.parse_args(argv)
    stale, problems = [], []
    roles = roles_to_do(root, args.roles)
    for role in roles:
        spec_file, readme = role / "meta" / "argument_specs.yml", role / "README.md"
        rel = readme.relative_to(root)
        if not spec_file.exists():
            problems.append(f"{role.relative_to(root)}: no meta/argument_specs.yml")
            continue
        if not readme.exists():
            problems.append(f"{rel}: missing")
            continue
        old = readme.read_text()
        try:
            new = updated(old, render(role))
        except ValueError as err:
            problems.append(f"{rel}: {err}")
            continue
        if new == old:
            continue
        stale.append(str(rel))
        if args.check:
            why = "has no generated variables block" if BEGIN not in old else "variables table is stale"
            problems.append(f"{rel}: {why}; run `make docs` (scripts/role_docs.py)")
        else:
            readme.write_text(new)
            print(f"wrote {rel}")
    for p in problems:
        print(p, file=sys.stderr)
    verb = "stale" if args.check else "rewritten"
    print(f"role docs: {len(roles)} roles, {len(stale)} {verb}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
