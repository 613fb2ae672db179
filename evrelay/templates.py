"""Checking the templates a user writes (`--format`, a routed sink's name) before any is used.

Both are Python format strings filled from each message. Python's syntax reaches further
than naming a field: `{value.__class__.__mro__}` walks attributes into the program's own
objects, `{headers!r}` prints an object's repr (with its memory address), a spec holding a
field (`{value:{key}}`) lets the message choose how it is formatted, and a width
(`{value:>2000000000}`) allocates that many characters for every message. A template here
names fields, picks an item by name (`{headers[trace]}`, `{value[id]}`) and formats with a
spec of modest width; anything else is refused before a message is read.
"""

from __future__ import annotations

import re
import string

MAX_WIDTH = 10_000
"""The widest field (and longest precision) a template may ask for."""

_NUMBER = re.compile(r"\d+")
_ALIGN = "<>=^"


class TemplateError(ValueError):
    """A template that asks for more than fields, items and a format spec."""


def template_roots(template: str) -> list[str]:
    """The field names the template uses (`headers` for `{headers[trace]}`), in order;
    TemplateError naming the first part that is not allowed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(str(exc)) from None
    roots = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        root = field.split("[", 1)[0]
        outside_items = re.sub(r"\[[^\]]*\]", "", field)
        if "." in outside_items:
            raise TemplateError(f"{{{field}}} reaches an attribute; a template may name fields and items ({{headers[NAME]}}) only")
        if conversion:
            raise TemplateError(f"{{{field}!{conversion}}}: conversions (!r, !s, !a) are not supported; fields are text already")
        if spec and ("{" in spec or "}" in spec):
            raise TemplateError(f"{{{field}:{spec}}}: a format spec cannot hold a field")
        widths = spec[2:] if len(spec) >= 2 and spec[1] in _ALIGN else spec  # the first character is a fill
        if any(int(number) > MAX_WIDTH for number in _NUMBER.findall(widths)):
            raise TemplateError(f"{{{field}:{spec}}}: wider than {MAX_WIDTH:,} characters")
        roots.append(root)
    return roots
