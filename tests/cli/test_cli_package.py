"""The CLI as a package: installed by ``pip install .[cli]`` with pinned dependencies, never needed by the
function app; its release-name rules and rollout ids agree with the app's; no traceback for any flags."""

from __future__ import annotations

import ast
import hashlib
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import vmss_canary_cli.app as cli
from rollout.releases import build_release, parse_release_name, rollout_id_for
from vmss_canary_cli.exits import MEANING, ExitCode
from vmss_canary_cli.releasefile import name_problem, read_release_file

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line.strip())
        if m:
            found[m[1].lower()] = m[2]
    return found


def test_the_console_script_is_the_packages_main_and_the_cli_extra_is_pinned_like_the_requirements() -> None:
    assert PYPROJECT["project"]["scripts"] == {"vmss-canary": "vmss_canary_cli:main"}
    module, _, name = PYPROJECT["project"]["scripts"]["vmss-canary"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    assert PYPROJECT["tool"]["setuptools"]["packages"] == ["vmss_canary_cli"]
    extra = dict(
        re.match(r"^([A-Za-z0-9_.-]+)==(.+)$", r).groups() for r in PYPROJECT["project"]["optional-dependencies"]["cli"]
    )  # type: ignore[union-attr]
    assert {"typer", "rich", "requests", "azure-storage-blob", "azure-identity"} == set(extra)
    known = pins(REPO / "requirements.txt") | pins(REPO / "requirements-dev.txt")
    assert {k: known.get(k) for k in extra} == extra  # `make test` installs exactly these
    assert "vmss_canary_cli" in PYPROJECT["tool"]["mypy"]["files"]


def test_the_function_app_never_imports_the_cli_or_its_libraries() -> None:
    names = "('typer', 'rich', 'click', 'vmss_canary_cli')"
    code = f"import sys, function_app; print(sorted(m for m in {names} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (
        "typer" not in (REPO / "requirements.txt").read_text() and "rich" not in (REPO / "requirements.txt").read_text()
    )
    for path in [REPO / "function_app.py", *(REPO / "rollout").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in {"typer", "rich", "vmss_canary_cli"}], path


def test_the_cli_never_imports_the_app() -> None:
    for path in (REPO / "vmss_canary_cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not roots & {"rollout", "function_app", "emulator"}, path


def test_without_the_cli_extra_the_command_says_what_to_install() -> None:
    code = "import sys; sys.modules['typer'] = None; import vmss_canary_cli; vmss_canary_cli.main()"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "pip install 'vmss-canary[cli]'" in done.stderr and "Traceback" not in done.stderr


def test_the_readme_exit_code_table_is_the_codes() -> None:
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", readme, re.M))
    assert {int(k): v for k, v in rows.items()} == {int(c): MEANING[c] for c in ExitCode}


# --- the app's release rules ------------------------------------------------------------------------

names = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,70}\.v[0-9]{1,13}\.(sh|image\.json|txt)", fullmatch=True),
    st.text(st.sampled_from(list("aZ09._-v/ shjson")), max_size=30),
)


@settings(max_examples=400, deadline=None)
@given(name=names, content=st.binary(min_size=1, max_size=64))
def test_names_and_rollout_ids_agree_with_the_app(tmp_path_factory: object, name: str, content: bytes) -> None:
    parsed = parse_release_name(name)
    assert (name_problem(name) is None) == (not isinstance(parsed, str) and "/" not in name)
    if isinstance(parsed, str) or "/" in name:
        return
    release = build_release_unchecked(parsed, content)
    directory = Path(str(tmp_path_factory.mktemp("r")))  # type: ignore[attr-defined]
    (directory / name).write_bytes(content + b"\necho\n")
    ours = read_release_file(directory / name)
    assert ours.rollout_id == rollout_id_for(build_release_unchecked(parsed, content + b"\necho\n"))
    assert ours.app == release.app and ours.version == release.version


def build_release_unchecked(parsed: object, content: bytes) -> object:
    from rollout.model import Release

    assert not isinstance(parsed, str)
    return Release(
        kind=parsed.kind,  # type: ignore[attr-defined]
        app=parsed.app,  # type: ignore[attr-defined]
        version=parsed.version,  # type: ignore[attr-defined]
        blob_name=parsed.blob_name,  # type: ignore[attr-defined]
        blob_url="https://x/y",
        sha256=hashlib.sha256(content).hexdigest(),
    )


def test_a_real_release_id_matches() -> None:
    path = REPO / "examples" / "install_nginx.v1.sh"
    parsed = parse_release_name(path.name)
    assert not isinstance(parsed, str)
    app_id = rollout_id_for(build_release(parsed, "https://x/init/install_nginx.v1.sh", path.read_bytes()))
    assert read_release_file(path).rollout_id == app_id


# --- no traceback, whatever the flags ---------------------------------------------------------------

WORDS = [
    *("status", "get", "fleet", "targets", "releases", "release-get", "release"),
    *("abort", "pause", "resume", "promote", "promote-full", "retry", "undo", "plan"),
    *("--url", "--key", "--token", "--scope", "-o", "--output", "json", "human", "yaml", "--http-timeout"),
    *("--watch", "-w", "--interval", "--events", "--reason", "--rollback", "--group-release", "--target"),
    *("--group", "--container", "--wait", "--no-wait", "--timeout", "--storage-connection-string"),
    *("--storage-account-url", "-h", "--help", "--", "-", "0", "-1", "1e309", "nan", "", "x" * 300),
    *("install_nginx-v1-0123456789", "install_nginx.v1.sh", "/nonexistent/a.v1.sh", "http://127.0.0.1:9", "ftp://x"),
    *("\x00", "é", "rg:vmss", "UseDevelopmentStorage=true", "https://acct.blob.core.windows.net"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(st.sampled_from(WORDS), max_size=8))
def test_no_traceback_for_any_combination_of_flags(argv: list[str]) -> None:
    result = CliRunner().invoke(cli.app, argv, env={"VMSS_CANARY_URL": "http://127.0.0.1:9", "VMSS_CANARY_KEY": "k"})
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.exc_info)
    assert "Traceback" not in result.output, argv
    assert result.exit_code in {int(c) for c in ExitCode}, (argv, result.exit_code, result.output)
