"""The one rule for user and item ids, shared by the data contract (validation) and the HTTP API.

Real catalogues have ids such as `jane doe`, `sku/004`, `a?b#c`, `john+doe@example.com` or
`münchen-01`. The pipeline accepts them, so the API must serve them: ids travel as one
percent-encoded path segment (`/users/sku%2F004/recommendations`, built by `id_segment` on the
server and `encodeURIComponent` in the page) and are decoded segment by segment before routing
(mmrec/serve/paths.py), so an encoded `/`, `?`, `#` or `%` stays part of the id.

Only ids that no URL can carry faithfully, or that would corrupt logs and terminals, are
refused, and validation quarantines their rows with the same reason (`id_problem`):
- empty ids (a missing id in disguise);
- control characters (C0 `\\x00-\\x1f`, DEL, C1 `\\x80-\\x9f`): invisible, they forge log lines
  and break CSV/TSV exports;
- exactly `.` or `..`: every URL parser (browsers, HTTP clients, proxies) removes such path
  segments, encoded or not (`%2E%2E` is normalised too), so a request can never name them;
- more than `ID_MAX_LENGTH` characters: an id is a key, not a document; this bounds what a
  request can make the server look up and log.
"""

from __future__ import annotations

import re
from urllib.parse import quote

#: longest id (in characters) the platform accepts
ID_MAX_LENGTH = 256

_CONTROL = r"\x00-\x1f\x7f-\x9f"
#: a regex matching ids that break the rule (what validation's GE check looks for)
UNUSABLE_ID_REGEX = rf"[{_CONTROL}]|^\.\.?$|^[\s\S]{{{ID_MAX_LENGTH + 1},}}"
#: a regex every usable id matches, except `.` and `..` (for OpenAPI `pattern`s; `check_id` is exact)
ID_PATTERN = rf"^[^{_CONTROL}]{{1,{ID_MAX_LENGTH}}}$"
_CONTROL_RE = re.compile(f"[{_CONTROL}]")


def id_problem(value: object) -> str | None:
    """Why `value` cannot be an id (a sentence for reports and 422 bodies), or None when it can."""
    if not isinstance(value, str):
        return f"ids are strings, not {type(value).__name__}"
    if not value:
        return "the id is empty"
    bad = _CONTROL_RE.search(value)
    if bad is not None:
        return (
            f"the id contains the control character U+{ord(bad.group()):04X} at position {bad.start()}; "
            "control characters cannot be shown, logged or exported safely: remove them from the source"
        )
    if value in (".", ".."):
        return f"the id {value!r} is a URL path navigation segment that HTTP clients remove; rename it"
    if len(value) > ID_MAX_LENGTH:
        return f"the id is {len(value)} characters long, above the limit of {ID_MAX_LENGTH}"
    return None


def check_id(value: str) -> str:
    """`value` when it is a usable id, else ValueError with the reason (a pydantic validator)."""
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def id_segment(value: str) -> str:
    """`value` as one URL path segment: every reserved character percent-encoded (`/` too).

    Same result as JavaScript's `encodeURIComponent` except that `!'()*` are encoded as well,
    which every server decodes the same way.
    """
    return quote(value, safe="-_.~")
