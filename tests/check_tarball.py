"""Check the collection tarball against the checkout, then print its size and file count.

    python tests/check_tarball.py .cache/dist/modelops-serving-<version>.tar.gz

The tarball must hold exactly the files of the checkout (tracked, or untracked and
not ignored by git) that users need -- SHIPPED below -- and nothing else: no tests,
fixtures, lab, bench, molecule scenarios, caches or venvs, no links, nothing a
local build picked up that a clean clone would not have. galaxy.yml's build_ignore
is how the build gets there; this is the independent statement of what it must give.
"""

import os
import re
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHIPPED = re.compile(r"""^(
    README\.md | CHANGELOG\.md | LICENSE
  | meta/[^/]+\.yml
  | docs/.+
  | plugins/.+
  | playbooks/.+
  | changelogs/(config|changelog)\.yaml
  | roles/[^/]+/(?!molecule/).+
  | runtime/(README\.md | pyproject\.toml | modelops_runtime/.+)
)$""", re.X)

# What the tarball must have whatever git says (the action plugin copies the
# runtime and its requirement lists into every model image).
REQUIRED = ["MANIFEST.json", "FILES.json", "LICENSE", "README.md", "CHANGELOG.md", "meta/runtime.yml",
            "runtime/modelops_runtime/__init__.py", "runtime/modelops_runtime/requirements/base.txt"]

# A guard against a stray big file (a model, an image archive) in a shipped folder.
MAX_BYTES = 1024 * 1024


def checkout_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    return {path for path in out.decode().split("\0") if path and os.path.isfile(os.path.join(ROOT, path))}


def main(tarball):
    problems = []
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    files = {m.name for m in members if m.isfile()}
    problems += ["%s is a %s, not a file or folder" % (m.name, "link" if m.issym() or m.islnk() else "special file")
                 for m in members if not (m.isfile() or m.isdir())]
    expected = {path for path in checkout_files() if SHIPPED.match(path)}
    problems += ["missing (build_ignore drops a file users need): %s" % path for path in sorted(expected - files)]
    problems += ["not for users (add it to galaxy.yml's build_ignore, or to SHIPPED here if users need it): %s" % path
                 for path in sorted(files - expected - {"MANIFEST.json", "FILES.json"})]
    problems += ["required but absent: %s" % path for path in REQUIRED if path not in files]
    size = os.path.getsize(tarball)
    if size > MAX_BYTES:
        problems.append("%d bytes is more than the %d allowed: what made it grow?" % (size, MAX_BYTES))

    tops = {}
    for path in files:
        top = path.split("/", 1)[0]
        tops[top] = tops.get(top, 0) + 1
    print("%s: %.0f KiB, %d files (%s)" % (os.path.relpath(tarball, ROOT), size / 1024.0, len(files),
                                           ", ".join("%s %d" % item for item in sorted(tops.items()))))
    for problem in problems:
        print("FAIL: " + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
