"""A griffe extension for the API reference: gearworker's docstrings use reST roles, MkDocs reads Markdown.

``:class:`~gearworker.errors.NoRetry``` becomes ```NoRetry``` and ````code```` becomes ```code```,
so the reference reads like the source without cross-links that could break the strict build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
_DOUBLE = re.compile(r"``([^`]+)``")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class RestRoles(griffe.Extension):
    """Rewrites each docstring once, when griffe loads its object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _DOUBLE.sub(r"`\1`", _ROLE.sub(_role, obj.docstring.value))
