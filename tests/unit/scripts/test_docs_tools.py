"""scripts/role_docs.py, scripts/check_paths.py and tests/check_argument_specs.py on small trees made here.

The README generator must rewrite only the block between its markers, render
every entry point and suboption, and in --check mode name each stale README;
the argument_specs check must catch what it promises to catch.
"""
from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


role_docs = _load("role_docs", ROOT / "scripts" / "role_docs.py")
check_specs = _load("check_argument_specs", ROOT / "tests" / "check_argument_specs.py")

SPECS = textwrap.dedent("""\
    ---
    argument_specs:
      main:
        short_description: A role made for the test.
        description: [The main entry point.]
        options:
          demo_port:
            type: int
            default: 8080
            description: Port | with a pipe and C(code).
          demo_mode:
            type: str
            choices: [a, b]
            default: a
            description: [First line., Second line.]
          demo_items:
            type: list
            elements: dict
            default: []
            description: Items.
            options:
              name:
                type: str
                required: true
                description: Item name.
              secret_key_content:
                type: str
                no_log: true
                description: Its secret.
      extra:
        short_description: A second entry point.
        description: [Called with tasks_from.]
        options:
          demo_extra_flag:
            type: bool
            default: false
            description: A flag.
    """)

README = ("# demo\n\nProse before, kept byte for byte.  \n\n## Variables\n\nIntro.\n\n"
          f"{role_docs.BEGIN}\nold hand-written table\n{role_docs.END}\n\n"
          "Prose after.\n\n## Example\n\nexample\n")


def _role(tmp_path: Path, readme: str = README, specs: str = SPECS) -> Path:
    role = tmp_path / "roles" / "demo"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "tasks").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(specs)
    (role / "defaults" / "main.yml").write_text("---\ndemo_port: 8080\ndemo_mode: a\ndemo_items: []\n")
    (role / "tasks" / "extra.yml").write_text("---\n[]\n")
    (role / "README.md").write_text(readme)
    return role


def _outside(text: str) -> tuple[str, str]:
    start, end = text.index(role_docs.BEGIN), text.index(role_docs.END) + len(role_docs.END)
    return text[:start], text[end:]


def test_rewrites_only_the_block_and_renders_every_entry_point(tmp_path):
    role = _role(tmp_path)
    assert role_docs.main(["--check"], root=tmp_path) == 1
    assert role_docs.main([], root=tmp_path) == 0
    text = (role / "README.md").read_text()
    assert _outside(text) == _outside(README)
    assert "old hand-written table" not in text
    assert "### Entry point `main`" in text and "### Entry point `extra` (`tasks_from: extra`)" in text
    assert text.index("Entry point `main`") < text.index("Entry point `extra`")
    assert "| `demo_port` | int | `8080` | no |  | Port \\| with a pipe and `code`. |" in text
    assert "| `demo_mode` | str | `a` | no | `a`, `b` | First line. Second line. |" in text
    assert "| `demo_items[].name` | str |  | yes |  | Item name. |" in text
    assert "no_log" in text.split("`demo_items[].secret_key_content`")[1].splitlines()[0]
    assert "| `demo_extra_flag` | bool | `false` | no |" in text
    # Current now: --check passes and a second run writes nothing.
    assert role_docs.main(["--check"], root=tmp_path) == 0
    before = (role / "README.md").stat().st_mtime_ns
    assert role_docs.main([], root=tmp_path) == 0
    assert (role / "README.md").stat().st_mtime_ns == before


def test_check_names_the_stale_readme_after_a_spec_change(tmp_path, capsys):
    role = _role(tmp_path)
    role_docs.main([], root=tmp_path)
    spec_file = role / "meta" / "argument_specs.yml"
    spec_file.write_text(spec_file.read_text().replace("default: 8080", "default: 9090"))
    capsys.readouterr()
    assert role_docs.main(["--check"], root=tmp_path) == 1
    assert "roles/demo/README.md: variables table is stale" in capsys.readouterr().err
    assert "`8080`" in (role / "README.md").read_text()


def test_a_readme_without_markers_gets_a_variables_section_before_the_example(tmp_path, capsys):
    plain = "# demo\n\nProse.\n\n## Example\n\nexample\n"
    role = _role(tmp_path, readme=plain)
    assert role_docs.main(["--check"], root=tmp_path) == 1
    assert "has no generated variables block" in capsys.readouterr().err
    role_docs.main([], root=tmp_path)
    text = (role / "README.md").read_text()
    assert text.startswith("# demo\n\nProse.\n\n## Variables\n\n" + role_docs.BEGIN)
    assert text.endswith(role_docs.END + "\n\n## Example\n\nexample\n")


def test_two_blocks_are_refused(tmp_path):
    block = f"{role_docs.BEGIN}\n{role_docs.END}\n"
    role = _role(tmp_path, readme=block + block)
    assert role_docs.main([], root=tmp_path) == 1
    assert (role / "README.md").read_text() == block + block


def test_every_role_of_the_collection_is_current():
    assert role_docs.main(["--check"]) == 0


def test_argument_specs_check_passes_a_good_role(tmp_path):
    assert check_specs.check_role(_role(tmp_path)) == []


@pytest.mark.parametrize("change, problem", [
    (("default: 8080", "default: 8081"), "defaults to 8081 in argument_specs but 8080"),
    (("description: Item name.", "required: true"), "option name has no description"),
    (("no_log: true", "required: false"), "secret_key_content looks like a secret but is not no_log"),
    (("  extra:", "  other:"), "entry point has no tasks/other.yml"),
    (("default: 8080", "default: '{{ other_port }}'"), "option demo_port is of type int but its default"),
    (("default: false", "default: 0"), "option demo_extra_flag is of type bool but its default 0 is not"),
    (("description: [Called with tasks_from.]", "version_added: '0.1.0'"), "demo:extra: no description"),
    (("demo_extra_flag:", "extra_flag:"), "option extra_flag is not prefixed with 'demo_'"),
])
def test_argument_specs_check_catches(tmp_path, change, problem):
    role = _role(tmp_path, specs=SPECS.replace(*change))
    assert any(problem in p for p in check_specs.check_role(role)), check_specs.check_role(role)


def test_argument_specs_check_catches_vars_and_defaults(tmp_path):
    role = _role(tmp_path)
    (role / "vars").mkdir()
    (role / "vars" / "main.yml").write_text("---\ndemo_derived: 1\n")
    (role / "defaults" / "main.yml").write_text("---\ndemo_port: 8080\ndemo_mode: a\ndemo_items: []\ndemo_new: 1\n")
    problems = check_specs.check_role(role)
    assert "demo: vars/main.yml variable demo_derived is not named '_demo_*'" in problems
    assert "demo: default demo_new is not documented in argument_specs 'main'" in problems


check_paths = _load("check_paths", ROOT / "scripts" / "check_paths.py")


def test_check_paths_names_what_is_missing(tmp_path):
    import subprocess
    (tmp_path / "roles" / "demo" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "demo" / "tasks" / "main.yml").write_text("---\n")
    (tmp_path / ".gitignore").write_text("roles/demo/pki/\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    md = tmp_path / "README.md"
    md.write_text("Steps in `roles/demo/tasks/main.yml:3` and [here](roles/demo/tasks/), all in\n"
                  "`roles/*/tasks`; not `roles/demo/tasks/switch.yml` nor [x](roles/gone.md);\n"
                  "`roles/<role>/x`, `roles/demo/pki/ca.crt` and `roles/demo/pki` (made at run time), `other/thing`,"
                  " https://e.x/roles/a.\n"
                  "```\nroles/in/a/fence.yml\n```\n")
    (tmp_path / "roles" / "demo" / "README.md").write_text("See `tasks/main.yml` and `tasks/gone.yml`.\n")
    assert check_paths.missing(md, root=tmp_path) == ["roles/demo/tasks/switch.yml", "roles/gone.md"]
    assert check_paths.missing(tmp_path / "roles" / "demo" / "README.md", root=tmp_path) == ["tasks/gone.yml"]


def test_check_paths_exit_status():
    assert check_paths.main([]) == 2
    assert check_paths.main([str(ROOT / "galaxy.yml")]) == 0


def test_argument_specs_check_and_readme_generator_visit_every_role(monkeypatch):
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir() and not p.name.startswith("."))
    seen = []
    monkeypatch.setattr(check_specs, "check_role", lambda role: seen.append(role.name) or [])
    assert check_specs.main() == 0
    assert seen == roles
    assert [p.name for p in role_docs.roles_to_do(ROOT, [])] == roles
