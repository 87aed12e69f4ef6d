"""Work in a forked child process (runtime/forked.py), as `config validate` checks its S3 stores:
the child's result, its expected errors and its failures come back to the parent, and the child
never outlives it. Each case runs in a fresh interpreter: a process with other threads (this
one, once a test server runs) does not fork (``can_fork``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2,
    reason="forks only where it may use a second CPU",
)

PRELUDE = """
import json, os, signal, sys, time
from retention.errors import ConfigError, ConfigIssue, RetentionError, StoreUnavailable
from retention.runtime.forked import ChildFailed, can_fork, forked, forked_awaiting
assert can_fork()
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
"""


def run_case(code: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    reported: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return reported


def test_the_work_runs_in_another_process_and_its_result_comes_back() -> None:
    reported = run_case(
        """
with forked(lambda: {"pid": os.getpid(), "parent": os.getppid()}, "a test") as child:
    found = child.result()
print(json.dumps({**found, "me": os.getpid()}))
"""
    )
    assert reported["pid"] != reported["me"]
    assert reported["parent"] == reported["me"]


def test_an_awaiting_child_starts_before_its_input_and_gets_what_the_parent_sends(
    tmp_path: Path,
) -> None:
    started = tmp_path / "started"
    reported = run_case(
        f"""
from types import MappingProxyType
def work(receive):
    open({str(started)!r}, "w").close()
    value = receive()
    return {{"kind": type(value["stores"]).__name__, "stores": dict(value["stores"])}}
with forked_awaiting(work, "a test") as child:
    deadline = time.monotonic() + 30
    while not os.path.exists({str(started)!r}) and time.monotonic() < deadline:
        time.sleep(0.01)
    began = os.path.exists({str(started)!r})
    child.send({{"stores": MappingProxyType({{"content": "s3"}})}})
    found = child.result()
print(json.dumps({{**found, "began before the input": began}}))
"""
    )
    assert reported == {
        "kind": "mappingproxy",
        "stores": {"content": "s3"},
        "began before the input": True,
    }


def test_an_awaiting_child_never_sent_its_input_is_ended_with_the_block() -> None:
    reported = run_case(
        """
with forked_awaiting(lambda receive: receive(), "a test") as child:
    pid = child.pid
print(json.dumps({"alive": alive(pid)}))
"""
    )
    assert reported == {"alive": False}


def test_an_expected_error_of_the_child_is_raised_in_the_parent_as_it_was() -> None:
    reported = run_case(
        """
def work():
    raise ConfigError([ConfigIssue("stores.b.credentials_file", "cannot read it")])
with forked(work, "a test") as child:
    try:
        child.result()
    except ConfigError as error:
        print(json.dumps({"issues": [str(issue) for issue in error.issues],
                          "message": str(error), "code": int(error.exit_code)}))
"""
    )
    assert reported == {
        "issues": ["stores.b.credentials_file: cannot read it"],
        "message": "1 configuration error",
        "code": 78,
    }


def test_a_bug_in_the_child_fails_the_parent_with_the_childs_traceback() -> None:
    reported = run_case(
        """
def work():
    return {}["no such key"]
with forked(work, "the check of the S3 stores") as child:
    try:
        child.result()
    except ChildFailed as error:
        print(json.dumps({"message": str(error)}))
"""
    )
    message = str(reported["message"])
    assert message.startswith("the check of the S3 stores, in a child process, failed:")
    assert "KeyError: 'no such key'" in message
    assert ", in work\n" in message  # the child's own frame


def test_a_child_killed_before_its_result_fails_the_parent_saying_so() -> None:
    reported = run_case(
        """
def work():
    os.kill(os.getpid(), signal.SIGKILL)
with forked(work, "the check of the S3 stores") as child:
    try:
        child.result()
    except ChildFailed as error:
        print(json.dumps({"message": str(error)}))
"""
    )
    assert reported["message"] == (
        "the check of the S3 stores, in a child process, was ended by SIGKILL before it finished"
    )


def test_a_signal_the_parent_ignores_the_child_ignores_too() -> None:
    # A background job of a shell script starts with SIGINT ignored: a Ctrl-C meant for the
    # foreground must not end its check halfway.
    reported = run_case(
        """
signal.signal(signal.SIGINT, signal.SIG_IGN)
def work():
    os.kill(os.getpid(), signal.SIGINT)
    return "finished"
with forked(work, "a test") as child:
    print(json.dumps({"result": child.result()}))
"""
    )
    assert reported == {"result": "finished"}


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaped has ended too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def test_a_child_whose_result_is_not_wanted_is_ended_with_the_block() -> None:
    reported = run_case(
        """
with forked(lambda: time.sleep(60), "a test") as child:
    pid = child.pid
print(json.dumps({"alive": alive(pid)}))
"""
    )
    assert reported == {"alive": False}


def test_the_child_ends_when_its_parent_dies_without_waiting_for_it() -> None:
    parent = subprocess.run(
        [
            sys.executable,
            "-c",
            PRELUDE
            + """
with forked(lambda: time.sleep(60), "a test") as child:
    print(child.pid, flush=True)
    os._exit(0)
""",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert parent.returncode == 0, parent.stderr
    pid = int(parent.stdout)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), f"child {pid} outlived its parent"


def test_a_process_with_another_thread_does_not_fork() -> None:
    code = """
import json, threading, time
from retention.runtime.forked import can_fork, forked
alone = can_fork()
threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
with forked(lambda: 1, "a test") as child:
    print(json.dumps({"alone": alone, "with a thread": can_fork(), "child": child is not None}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == {"alone": True, "with a thread": False, "child": False}
