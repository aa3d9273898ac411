"""deploy/Dockerfile, linted offline (no Docker engine here): its instructions parsed by a
small parser of our own and checked against the repository, pyproject's extras, the setup
script (scripts/setup), .python-version and the console scripts installed in this venv."""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "HF_HUB_OFFLINE": "1",
}


@attrs.frozen
class Instruction:
    line: int  # where it starts (1-based)
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest, continuation lines joined
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions: comments and blank lines dropped, lines ending in ``\\``
    joined with the next (comment lines inside a continuation skipped, as Docker does)."""
    out: list[Instruction] = []
    stage, buf, start = -1, "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        full = (buf + line).strip()
        buf = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(start, keyword, args.strip(), stage))
    assert not buf, "the Dockerfile ends inside a continuation line"
    return out


def env_pairs(args: str) -> dict[str, str]:
    """``ENV K=V K2=V2`` (or the legacy ``ENV K V``) as a dict."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


def flags_and_rest(args: str) -> tuple[dict[str, str], list[str]]:
    """``COPY --from=x --chmod=0755 a b`` → ({'from': 'x', 'chmod': '0755'}, ['a', 'b'])."""
    flags, rest = {}, []
    for token in shlex.split(args):
        if token.startswith("--") and not rest:
            key, _, value = token[2:].partition("=")
            flags[key] = value
        else:
            rest.append(token)
    return flags, rest


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def uv_syncs(instructions: list[Instruction]) -> list[list[str]]:
    """The argument lists of every ``uv sync`` the RUN instructions execute."""
    found = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for m in re.finditer(r"uv sync([^;&|]*)", ins.args):
            found.append(shlex.split(m.group(1)))
    return found


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = 'FROM a AS b\n# c\nRUN x \\\n  # inside\n  y\nENV A=1 B="2 3"\nFROM b\nUSER 5\n'
    got = parse(text)
    assert [(i.keyword, i.stage, i.line) for i in got] == [
        ("FROM", 0, 1),
        ("RUN", 0, 3),
        ("ENV", 0, 6),
        ("FROM", 1, 7),
        ("USER", 1, 8),
    ]
    assert got[1].args == "x y"
    assert env_pairs(got[2].args) == {"A": "1", "B": "2 3"}


def test_multi_stage_with_a_builder(instructions: list[Instruction]) -> None:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "a builder stage and a final stage"
    names = {f.args.split()[-1] for f in froms if " AS " in f.args.upper()}
    for ins in instructions:
        if ins.keyword == "COPY":
            flags, _ = flags_and_rest(ins.args)
            if "from" in flags:
                assert flags["from"] in names, f"line {ins.line}: unknown stage {flags['from']}"
    # nothing of the build toolchain reaches the final stage except the built environment
    final = final_stage(instructions)
    assert not uv_syncs(final), "uv sync belongs in the builder"
    assert not any("apt-get install" in i.args for i in final if i.keyword == "RUN")
    assert any(i.keyword == "COPY" and flags_and_rest(i.args)[0].get("from") for i in final), (
        "the final stage copies the environment from the builder"
    )


def test_final_user_is_not_root(instructions: list[Instruction]) -> None:
    users = [i.args for i in final_stage(instructions) if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0"), users[-1]
    # numeric, so Kubernetes' runAsNonRoot can verify it, and the user the image creates
    assert uid.isdigit() and int(uid) >= 1000, users[-1]
    created = " ".join(i.args for i in final_stage(instructions) if i.keyword == "RUN")
    assert f"--uid {uid}" in created


def test_python_version_matches_dot_python_version(instructions: list[Instruction]) -> None:
    wanted = (ROOT / ".python-version").read_text().strip()
    args = {
        k: v
        for i in instructions
        if i.keyword == "ARG" and "=" in i.args
        for k, v in [i.args.split("=", 1)]
    }
    assert args.get("PYTHON_VERSION") == wanted
    for f in (i for i in instructions if i.keyword == "FROM"):
        assert f.args.startswith("python:${PYTHON_VERSION}"), f"line {f.line}: {f.args}"


def test_uv_sync_is_locked_and_names_real_extras(instructions: list[Instruction]) -> None:
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    setup = (ROOT / "scripts" / "setup").read_text()
    setup_sync = shlex.split(re.search(r"uv sync([^\n;&|]*)", setup).group(1))
    locking = {f for f in setup_sync if f in ("--frozen", "--locked", "--compile-bytecode")}
    assert "--frozen" in locking, "the setup script is the reference: it syncs --frozen"
    syncs = uv_syncs(instructions)
    assert syncs, "the builder installs with uv sync"
    used: set[str] = set()
    for args in syncs:
        assert locking <= set(args), f"uv sync {args} lacks {locking - set(args)} (setup's flags)"
        named = [args[k + 1] for k, a in enumerate(args) if a == "--extra"]
        named += [a.split("=", 1)[1] for a in args if a.startswith("--extra=")]
        assert set(named) <= extras, f"unknown extras {set(named) - extras}"
        assert {"flower", "experiments"} <= set(named), args
        used |= set(named)
    assert "robot" in used, "the SO-100 image (ROBOT=1) adds the robot extra"


def test_every_copy_source_exists(instructions: list[Instruction]) -> None:
    copies = [i for i in instructions if i.keyword in ("COPY", "ADD")]
    assert copies
    for ins in copies:
        flags, paths = flags_and_rest(ins.args)
        if "from" in flags:
            continue
        *sources, _dest = paths
        assert sources, f"line {ins.line}: COPY without a source"
        for src in sources:
            assert (ROOT / src).exists(), f"line {ins.line}: {src} is not in the repository"


def test_offline_environment(instructions: list[Instruction]) -> None:
    env: dict[str, str] = {}
    for ins in final_stage(instructions):
        if ins.keyword == "ENV":
            env.update(env_pairs(ins.args))
    for key, value in OFFLINE_ENV.items():
        assert env.get(key) == value, f"{key} should be {value} in the final image"
    assert env["PATH"].startswith("/app/.venv/bin")


def entrypoint_roles() -> dict[str, str]:
    """``role) exec PROGRAM`` lines of deploy/entrypoint.sh."""
    text = ENTRYPOINT.read_text()
    return dict(re.findall(r"^\s*([\w-]+)\)\s*exec\s+([\w-]+)", text, re.M))


def fedkit_commands() -> set[str]:
    return set(re.findall(r'command == "(\w+)"', (ROOT / "experiments" / "cli.py").read_text()))


def test_every_cli_invoked_exists(instructions: list[Instruction]) -> None:
    roles = entrypoint_roles()
    assert {"superlink", "supernode", "superexec"} <= set(roles)
    programs = set(roles.values())
    text = " ".join(i.args for i in instructions if i.keyword in ("RUN", "CMD", "ENTRYPOINT"))
    programs |= set(re.findall(r"\b(flower-[a-z]+|flwr(?:-[a-z]+)?)\b", text))
    for program in programs - {"fedkit"}:
        assert (VENV_BIN / program).exists(), f"{program} is not a console script of this venv"
    assert (VENV_BIN / "fedkit").exists()
    subs = [  # `fedkit SUB` where a shell command starts (the build's smoke checks)
        sub
        for ins in instructions
        for sub in re.findall(r"(?:^|&&|;|\|\|)\s*fedkit\s+([a-z]+)", ins.args)
    ]
    assert subs, "the image smoke-checks a fedkit subcommand"
    for sub in subs:
        assert sub in fedkit_commands(), f"fedkit {sub} is not a fedkit subcommand"
    # the entrypoint is what the final stage installs and runs
    final = final_stage(instructions)
    entry = next(i for i in reversed(final) if i.keyword == "ENTRYPOINT")
    assert entry.args == '["fedkit-entrypoint"]'
    installed = [flags_and_rest(i.args)[1] for i in final if i.keyword == "COPY"]
    assert ["deploy/entrypoint.sh", "/usr/local/bin/fedkit-entrypoint"] in installed
    cmd = next(i for i in reversed(final) if i.keyword == "CMD")
    assert shlex.split(cmd.args.strip("[]").replace(",", " "))[0] in roles


def test_the_deploy_scripts_the_image_carries_exist(instructions: list[Instruction]) -> None:
    copied = {
        src
        for i in instructions
        if i.keyword == "COPY" and "from" not in flags_and_rest(i.args)[0]
        for src in flags_and_rest(i.args)[1][:-1]
    }
    assert {"deploy/register_nodes.py", "deploy/pki.py", "deploy/node_metrics_server.py"} <= copied
    for package in ("fedkit", "experiments", "attacks", "privacy", "chaos", "paper"):
        assert package in copied, f"{package} is a wheel package (pyproject) but not copied"
