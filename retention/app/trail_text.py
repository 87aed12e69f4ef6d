"""Free text that goes into the audit trail as written (a hold's reason, an erasure request's
reference): refused when it holds what most often slips in, an e-mail or an IP address."""

from __future__ import annotations

import ipaddress
import re

from retention.errors import UsageError

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# A run of what an IPv6 address is written with: hex digits, ':' and the '.' of an IPv4 tail.
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]+")
_HEX_DIGIT = re.compile(r"[0-9A-Fa-f]")


def refuse_personal_data(option: str, text: str, instead: str) -> None:
    """Given an option's name, its text and an example of what to write, raise UsageError
    (exit 2) when the text holds an e-mail or IP address (v4 or v6).

    Example: ``refuse_personal_data("--reason", "asked by jo@example.com", "'case L-17'")``
    raises; ``refuse_personal_data("--reason", "case L-17 at 12:30:45", "...")`` returns None.
    """
    if _EMAIL.search(text) or _IPV4.search(text) or _holds_ipv6(text):
        raise UsageError(
            f"{option} holds an e-mail or IP address; it goes into the audit trail as written: "
            f"give a case or ticket reference instead (e.g. {instead})"
        )


def _holds_ipv6(text: str) -> bool:
    """Whether ``text`` holds an IPv6 address: compressed (``2001:db8::1``), in full,
    IPv4-mapped (``::ffff:192.0.2.1``), with a zone (``fe80::1%eth0``), in brackets with a port
    (``[2001:db8::1]:443``) or after a label (``ip:2001:db8::1``). Neither a time (``12:30:45``),
    a MAC address (too few groups) nor a part of a word (``std::deque``, ``G1::5``) is one;
    only eight groups of digits like ``1:2:3:4:5:6:7:8`` would be taken for one."""
    for match in _IPV6_RUN.finditer(text):
        run = match.group()
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end()] if match.end() < len(text) else " "
        if _is_word(before):
            if run.startswith("::") or not run.startswith(":"):
                continue  # a scope (Foo::Bar) or the end of a word, not an address
            run = run[1:]  # a label's colon: "ip:2001:db8::1"
        if _is_word(after) and not run.endswith(":"):
            continue
        if run.count(":") < 2:
            continue
        for candidate in (run, run.rstrip(".:"), run.lstrip(".")):
            if not _HEX_DIGIT.search(candidate):
                continue
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            return True
    return False


def _is_word(character: str) -> bool:
    return character.isalnum() or character == "_"
