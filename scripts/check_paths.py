#!/usr/bin/env python3
"""Fail when a Markdown file names a path of this repository that does not exist.

A path is any inline-code span or link target whose first component is an
entry at the top of the repository that git tracks (roles/..., runtime/...,
Makefile, galaxy.yml) or an entry of the file's own folder (a role README's
`tasks/main.yml`): such a name is a promise that the file or folder is there,
from the repository root or from the file's folder. Globs (`roles/*/molecule/default`) must match at least one path;
spans with placeholders (`<name>`, `{a,b}`, `$(VAR)`) are skipped, and so are
paths git ignores (made at run time, like `inventories/lab/pki/`). A `:line`
or `#anchor` suffix is dropped before the check.

Usage: scripts/check_paths.py FILE.md ...   (relative to the repository root, or absolute)
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
SKIP = re.compile(r"[<>{}$\s|=]")


def top_level(root: Path) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return {line.split("/", 1)[0] for line in out.splitlines() if line}


def ignored(root: Path, path: str) -> bool:
    """Whether git ignores the path, as a file or (patterns like `lab/.state/`) as a folder."""
    forms = dict.fromkeys([path, path.rstrip("/") + "/"])
    return any(subprocess.run(["git", "check-ignore", "-q", "--no-index", form], cwd=root).returncode == 0
               for form in forms)


def candidates(text: str) -> list[str]:
    text = FENCE.sub("", text)
    found = CODE.findall(text) + LINK.findall(text)
    names = []
    for token in found:
        token = token.strip()
        if token.startswith(("http:", "https:", "#", "mailto:")):
            continue
        for part in token.split():
            part = part.strip(".,;:()")
            part = re.sub(r"(#.*|:\d+(-\d+)?)$", "", part).removeprefix("./")
            if part and not SKIP.search(part):
                names.append(part)
    return names


def missing(md: Path, root: Path = ROOT) -> list[str]:
    """Names in md that exist neither from the repository root nor from md's own folder."""
    here = md.resolve().parent
    tops = top_level(root) | {p.name for p in here.iterdir()}
    bad = []
    for name in dict.fromkeys(candidates(md.read_text())):
        if name.split("/", 1)[0] not in tops:
            continue
        bases = [root, here]
        if "*" in name or "?" in name:
            found = any(list(base.glob(name.rstrip("/"))) for base in bases)
        else:
            found = any((base / name).exists() for base in bases) or ignored(root, name)
        if not found:
            bad.append(name)
    return bad


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    problems = 0
    for arg in argv:
        md = (ROOT / arg) if not Path(arg).is_absolute() else Path(arg)
        bad = missing(md)
        for name in bad:
            print(f"{arg}: names {name}, which does not exist")
        problems += len(bad)
    print(f"paths: {len(argv)} files checked, {problems} names of missing paths")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
