"""Free text that goes into the audit trail as written (a hold's reason, an erasure request's
reference): refused when it holds what most often slips in, an e-mail or an IP address."""

from __future__ import annotations

import re

from retention.errors import UsageError

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


def refuse_personal_data(option: str, text: str, instead: str) -> None:
    """Given an option's name, its text and an example of what to write, raise UsageError
    (exit 2) when the text holds an e-mail or IP address.

    Example: ``refuse_personal_data("--reason", "asked by jo@example.com", "'case L-17'")``
    raises; ``refuse_personal_data("--reason", "case L-17", "...")`` returns None.
    """
    if _EMAIL.search(text) or _IPV4.search(text):
        raise UsageError(
            f"{option} holds an e-mail or IP address; it goes into the audit trail as written: "
            f"give a case or ticket reference instead (e.g. {instead})"
        )
