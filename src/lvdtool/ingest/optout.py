"""Publisher opt-out through the X-Robots-Tag response header.

We honour noai, noimageai, noindex and noimageindex by default, as img2dataset does: noindex and
noimageindex are older than the AI-specific directives and are what most sites that object to
crawling actually send. The set is configurable (FetchConfig.opt_out_directives).

Header values look like "noai, noimageai" or "googlebot: noindex"; a directive group with an
agent name applies only to that agent (or to every agent for "*").
"""

from __future__ import annotations

from typing import Iterable

DEFAULT_OPT_OUT_DIRECTIVES: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
# Directives that themselves take a value after ':'; anything else before a ':' is an agent name.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def robots_directives(header_values: Iterable[str], agent: str) -> set[str]:
    """The directives in X-Robots-Tag values that apply to `agent` (lower-cased)."""
    agent = agent.lower()
    found: set[str] = set()
    for value in header_values:
        value = value.strip().lower()
        head, sep, rest = value.partition(":")
        head = head.strip()
        if sep and "," not in head and head not in _VALUED_DIRECTIVES:
            if head not in (agent, "*"):
                continue
            value = rest
        found.update(d.strip() for d in value.split(",") if d.strip())
    return found


def opted_out(header_values: Iterable[str], agent: str, directives: Iterable[str]) -> str | None:
    """The first opt-out directive present, or None."""
    present = robots_directives(header_values, agent)
    for directive in directives:
        if directive.lower() in present:
            return directive.lower()
    return None
