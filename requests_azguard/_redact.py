"""Hiding credentials in URLs: one function for every place a URL is shown.

A Redis URL (``AZGUARD_REDIS_URL``), a proxy URL or a target URL can carry a
password in its user info (``scheme://user:password@host``) or in its query
string (redis-py reads ``?password=``).  Passwords are often pasted in
unescaped, so ``@ / # ? : %`` all occur in them; a parser that follows the
RFC then sees a shorter user info, a fragment or a path, and a regex that
stops at the first ``@`` or ``/`` leaks the rest.  So the user info is taken
as everything up to the *last* ``@`` (a host never contains one), and only
what follows is handed to ``urllib.parse``, whose query parser finds the
credential parameters.  When in doubt, more is hidden, never less.
"""

from __future__ import annotations

import re
from typing import Final, List, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

__all__ = ["redact_url", "scrub", "secrets_of"]

MASK: Final = "***"

# Query parameters whose value is a credential (redis-py reads "password";
# the rest are common spellings in other clients' URLs).
_SECRET_PARAM: Final = re.compile(
    r"(pass|pwd|secret|token|auth|credential|api[_-]?key|access[_-]?key|signature|sig)",
    re.IGNORECASE,
)


_SECRET_QUERY: Final = re.compile(
    r"(?P<key>[?&;][^=&;?#]*=)(?P<value>[^&;]*)",
)


def _mask_query(url: str, found: Set[str]) -> str:
    """Mask credential parameters.  A pasted value runs to the next ``&`` or
    ``;`` or the end, ``#``, ``?`` and ``@`` included: the query parser would
    stop at ``#`` and leave the rest of a password behind."""

    def repl(match: re.Match[str]) -> str:
        key, value = match.group("key"), match.group("value")
        if not value or not _SECRET_PARAM.search(key):
            return match.group(0)
        found.update({value, unquote(value), quote(value, safe=""), quote(value)})
        return key + MASK

    return _SECRET_QUERY.sub(repl, url)


def _split(url: str) -> Tuple[str, str, str]:
    """``(scheme_and_slashes, userinfo, rest)``; userinfo "" when there is none."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    at = rest.rfind("@")
    if at < 0:
        return scheme, "", rest
    return scheme, rest[:at], rest[at + 1 :]


def _analyse(url: str) -> Tuple[str, Set[str]]:
    """``url`` redacted, and the secrets taken out of it."""
    found: Set[str] = set()
    masked = _mask_query(url, found)
    scheme, userinfo, rest = _split(masked)
    if not userinfo and "@" not in masked:
        return masked, found
    user, colon, password = userinfo.partition(":")
    if colon and not re.search(r"[/?#%@\s]", user):
        secret, shown = password, f"{user}:{MASK}"
    else:
        secret, shown = userinfo, MASK
    if secret and secret != MASK:
        found.update({secret, unquote(secret)})
    if "?" not in rest and "#" not in rest:
        return f"{scheme}{shown}@{rest}", found
    # What follows the user info goes through the URL parser once more, so a
    # query that the user info hid from the first pass is masked too.
    return f"{scheme}{shown}@{_mask_query(rest, found)}", found


def redact_url(url: str) -> str:
    """``url`` with its password and credential query values replaced by ``***``.

    The user name stays (it helps to tell two configurations apart) unless
    it holds characters a user name cannot, in which case the whole user
    info is hidden.  A user info without ``:`` is hidden whole: people write
    ``redis://PASSWORD@host`` too.
    """
    if not isinstance(url, str):
        return MASK
    return _analyse(url)[0]


def secrets_of(url: str) -> List[str]:
    """Every secret ``redact_url`` hides in ``url``, raw and percent-coded,
    longest first (for :func:`scrub`)."""
    if not isinstance(url, str):
        return []
    found = {s for s in _analyse(url)[1] if s and s != MASK}
    # The parser's view too: what urlsplit calls the password is what a
    # client library would send (and might quote in an error).
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found.update({password, unquote(password)})
    return sorted(found, key=len, reverse=True)


def scrub(text: str, *urls: str) -> str:
    """``text`` with each URL shown redacted and every secret of ``urls`` masked
    (an exception message may quote part of a URL)."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        for secret in secrets_of(url):
            text = text.replace(secret, MASK)
    return text
