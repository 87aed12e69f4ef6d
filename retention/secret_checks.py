"""Whether the secrets a config names can be read: what `config validate` and the daemon's
start check beside the stores. Outside the app package, whose use cases (plan, run, the trail's
recorder) `config validate` does not need: it imports only what it reads (the hash key, the
state URL and the audit keys)."""

from __future__ import annotations

from retention.audit.keys import AuditKeyError
from retention.audit.opening import audit_keys
from retention.config import Config
from retention.errors import ConfigError, ConfigIssue
from retention.runtime.secrets import read_hash_key, state_url


def check_secrets(config: Config) -> list[ConfigIssue]:
    """Given a config, return a problem for each secret it names that cannot be read, and for
    a state database URL that cannot be had (a variable unset, a credential unreadable, no
    [state] under systemd) or used (a port that is not a number)."""
    issues: list[ConfigIssue] = []
    try:
        read_hash_key(config.settings)
    except ConfigError as error:
        issues += error.issues
    try:
        url = state_url(config.state)
    except ConfigError as error:
        issues += error.issues
    else:
        issues += _unusable_state_url(url)
    if config.audit is not None and config.audit.enabled:
        try:
            audit_keys(config.audit)
        except ConfigError as error:
            issues += error.issues
        except AuditKeyError as error:
            issues.append(ConfigIssue("audit.signing_key_file", str(error)))
    return issues


def _unusable_state_url(url: str) -> list[ConfigIssue]:
    """A server's state database URL that no engine can be made on (state.py). A SQLite URL is
    a file's path, and is not parsed here: that would import SQLAlchemy into a check that has
    no other use for it."""
    if url.startswith("sqlite"):
        return []
    from retention.state import state_url_issue

    issue = state_url_issue(url)
    return [] if issue is None else [issue]
