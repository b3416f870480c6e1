"""The Dockerfile, checked offline (no Docker engine here): its instructions carry what the image needs, and its
install steps, run in a fresh virtual environment, give a collector that starts with the image's config."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.helpers import ROOT, free_port, http_get

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        op, _, args = buf.partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    return out


def first(op: str) -> str:
    return next(a for o, a in instructions() if o == op)


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def test_dockerfile_carries_what_the_image_needs() -> None:
    ins = instructions()
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", first("FROM"))
    # a non-root user, created in the image, is the one that runs
    user = [a for o, a in ins if o == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    uid = user.split(":")[0]
    assert any(o == "RUN" and "useradd" in a and (f"--uid {uid}" in a or f" {uid} " in a) for o, a in ins)
    # the config path the image runs is the one it ships (and the one to mount over)
    cmd = exec_form(first("ENTRYPOINT")) + exec_form(first("CMD"))
    assert cmd[:2] == ["llm-collector", "run"]
    config_path = cmd[cmd.index("--config") + 1]
    assert any(o == "COPY" and a.split()[-1] == config_path for o, a in ins)
    # the queue directory is a volume, and the image's config keeps its queues there
    volumes = json.loads(first("VOLUME"))
    image_cfg = yaml.safe_load(image_config_source().read_text())
    storage = image_cfg["extensions"]["file_storage"]["directory"]
    assert any(storage.startswith(v.rstrip("/") + "/") for v in volumes)
    # the health check asks the health_check extension
    hc = first("HEALTHCHECK")
    port = image_cfg["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1].rstrip("}").split("-")[-1]
    assert f"127.0.0.1:{port}/" in hc and "CMD" in hc
    exposed = {int(p) for p in first("EXPOSE").split()}
    assert {4317, 4318, int(port), 8888} <= exposed


def image_config_source() -> Path:
    for o, a in instructions():
        if o == "COPY" and a.split()[-1].endswith("pipelines.yaml"):
            return ROOT / a.split()[0]
    raise AssertionError("the Dockerfile does not copy a pipelines.yaml")


def test_install_steps_in_a_fresh_venv_give_a_collector_that_starts(tmp_path: Path) -> None:
    """Replays COPY/WORKDIR/ENV/RUN-pip into a temporary root, then runs the installed entry point."""
    root = tmp_path / "rootfs"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    workdir = root
    ran_install = False
    for op, args in instructions():
        if op == "WORKDIR":
            workdir = root / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", args):
                env[k] = v
        elif op == "COPY":
            *srcs, dst = args.split()
            target = (root / dst.lstrip("/")) if dst.startswith("/") else workdir / dst
            for src in srcs:
                s = ROOT / src
                assert s.exists(), f"COPY {src}: not in the checkout"
                if s.is_dir():
                    shutil.copytree(s, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                else:
                    if dst.endswith("/"):
                        target.mkdir(parents=True, exist_ok=True)
                        shutil.copy(s, target / s.name)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(s, target)
        elif op == "RUN" and "pip install" in args:
            # the image's install step, as written, with the venv's python first on PATH; its apt-get and rm
            # commands (the compiler for the build, installed and removed) are the image's own: not run here,
            # where they would change this machine (which has a compiler)
            steps = [c.strip() for c in args.split("&&")]
            assert any(c.startswith("apt-get install") and "gcc" in c for c in steps)
            kept = " && ".join(c for c in steps if not c.startswith(("apt-get", "rm ")))
            r = subprocess.run(kept, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            ran_install = True
    assert ran_install
    installed = venv / "bin" / "llm-collector"
    assert installed.exists()

    # start with the image's own config (paths under the temporary root, ports free)
    cmd = exec_form(first("ENTRYPOINT")) + exec_form(first("CMD"))
    config_path = root / cmd[cmd.index("--config") + 1].lstrip("/")
    text = config_path.read_text().replace("/var/lib/llm-collector", str(root / "var/lib/llm-collector"))
    config_path.write_text(text)
    health = free_port()
    env.update(OTLP_GRPC_ENDPOINT=f"127.0.0.1:{free_port()}", OTLP_HTTP_ENDPOINT=f"127.0.0.1:{free_port()}",
               HEALTH_CHECK_ENDPOINT=f"127.0.0.1:{health}", METRICS_ADDRESS=f"127.0.0.1:{free_port()}")
    cmd[cmd.index("--config") + 1] = str(config_path)
    (root / "var/lib/llm-collector").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=root / "var/lib/llm-collector", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _ = http_get(f"http://127.0.0.1:{health}/", timeout=1)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, proc.stdout.read().decode() if proc.poll() is not None and proc.stdout else "timeout"
        # the collector runs from the venv, not from the checkout
        out = subprocess.run([str(venv / "bin" / "python"), "-c", "import collector; print(collector.__file__)"],
                             env=env, capture_output=True, text=True, cwd=tmp_path)
        assert str(venv) in out.stdout
        assert (root / "var/lib/llm-collector/queue").is_dir()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0
