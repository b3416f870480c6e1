"""PII and secret detection for the redaction processor: one compiled pattern set, one scan per value.

Each detector has a *core* (a necessary condition, no look-arounds) and a *strict* form (core plus boundary
guards). With Hyperscan available, all cores (plus the user's patterns in prefilter mode) are compiled into
one database; a value is scanned once, and only the places where a core matched are checked with the strict
Python pattern anchored there (``match(s, pos)``) and, for card numbers and IBANs, a checksum. Without
Hyperscan the strict patterns run as Python regexes (same results, slower).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_hs: Any
try:  # pragma: no cover - depends on the platform
    import hyperscan as _hs
except ImportError:  # pragma: no cover
    _hs = None

__all__ = ["DETECTORS", "HAVE_HYPERSCAN", "Detector", "Finder", "iban_ok", "luhn_ok"]

HAVE_HYPERSCAN = _hs is not None

_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def luhn_ok(text: str) -> bool:
    digits = [ord(c) - 48 for c in text if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    r = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in r)) % 97 == 1
    except ValueError:
        return False


@dataclass(frozen=True)
class Detector:
    kind: str
    core: str  # necessary condition (Hyperscan / PCRE syntax that Python also reads)
    strict: str  # core with boundary guards (Python)
    validate: Callable[[str], bool] | None = None
    anchor_left: bool = False  # core starts in the middle of the match (email: at the '@')


_OCT = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_H = r"[0-9A-Fa-f]{1,4}"
DETECTORS: dict[str, list[Detector]] = {
    "email": [Detector(
        "email", r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])",
        anchor_left=True)],
    "credit_card": [Detector(
        "credit_card", r"\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{4,5}|\d{13,19}",
        r"(?<![\w-])(?:\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{4,5}|\d{13,19})(?![\w-])",
        luhn_ok)],
    "us_ssn": [Detector(
        "us_ssn", r"\d{3}-\d{2}-\d{4}",
        r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")],
    "phone": [
        Detector("phone", r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}",
                 r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}(?![\w-])"),
        Detector("phone", r"\(\d{3}\) ?\d{3}[-. ]\d{4}",
                 r"(?<![\w#/+.-])\(\d{3}\) ?\d{3}[-. ]\d{4}(?![\w-]|\.\d)"),
        Detector("phone", r"\d{3}[-. ]\d{3}[-. ]\d{4}",
                 r"(?<![\w#/+.-])\d{3}[-. ]\d{3}[-. ]\d{4}(?![\w-]|\.\d)"),
    ],
    "ip": [
        Detector("ip", r"(?:\d{1,3}\.){3}\d{1,3}", rf"(?<![\w.:])(?:{_OCT}\.){{3}}{_OCT}(?!\w|\.\d)"),
        Detector("ip", rf"(?:{_H}:){{7}}{_H}", rf"(?<![\w:])(?:{_H}:){{7}}{_H}(?![\w:])"),
        Detector("ip", rf"(?:{_H}:){{1,6}}:(?:{_H}:){{0,5}}{_H}",
                 rf"(?<![\w:])(?:{_H}:){{1,6}}:(?:{_H}:){{0,5}}{_H}(?![\w:])"),
    ],
    "iban": [Detector(
        "iban", r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}",
        r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])", iban_ok)],
    "secrets": [
        Detector("secret", r"sk-[A-Za-z0-9_-]{20,}", r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}"),
        Detector("secret", r"(?:AKIA|ASIA)[0-9A-Z]{16}", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
        Detector("secret", r"gh[pousr]_[A-Za-z0-9]{30,}", r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,}"),
        Detector("secret", r"github_pat_[A-Za-z0-9_]{20,}", r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}"),
        Detector("secret", r"xox[abposr]-[A-Za-z0-9-]{10,}", r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"),
        Detector("secret", r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
                 r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
        Detector("secret", r"[Bb]earer[ \t]+[A-Za-z0-9._~+/=-]{16,}",
                 r"(?<![A-Za-z0-9])[Bb]earer[ \t]+[A-Za-z0-9._~+/=-]{16,}"),
        Detector("secret", r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
                 r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z]+ )*PRIVATE KEY-----"),
    ],
}
KINDS = tuple(DETECTORS)

Match = tuple[int, int, str]  # start, end, kind


def any_match(db: Any, data: bytes) -> bool:
    """Does the Hyperscan database ``db`` match anywhere in ``data``? (The scan stops at the first match.)"""
    hit = False

    def cb(_i: int, _f: int, _t: int, _fl: int, _c: object) -> bool:
        nonlocal hit
        hit = True
        return True

    try:
        db.scan(data, match_event_handler=cb)
    except _hs.ScanTerminated:
        pass
    return hit


class Finder:
    """Finds detector and user-pattern matches in strings, one Hyperscan scan per string."""

    def __init__(self, detectors: Sequence[str], patterns: Sequence[tuple[str, str]] = (),
                 blocked_values: Sequence[str] = (), use_hyperscan: bool = True) -> None:
        self.dets: list[Detector] = [d for name in detectors for d in DETECTORS[name]]
        self.strict = [re.compile(d.strict, re.ASCII) for d in self.dets]
        # user regexes: (kind, compiled); blocked_values are masked as "blocked"
        self.user: list[tuple[str, re.Pattern[str]]] = [(n, re.compile(r)) for n, r in patterns]
        self.user += [("blocked", re.compile(r)) for r in blocked_values]
        self._always: list[int] = []  # user patterns Hyperscan cannot prefilter: run on every string
        self.db: Any = None
        self.gate_exprs: list[tuple[bytes, int]] = []
        if use_hyperscan and _hs is not None and (self.dets or self.user):
            self._build_hs()
        if self.db is None:
            self._always = list(range(len(self.user)))

    def _build_hs(self) -> None:
        assert _hs is not None
        exprs, ids, flags = [], [], []
        for i, d in enumerate(self.dets):
            exprs.append(d.core.encode())
            ids.append(i)
            flags.append(_hs.HS_FLAG_SOM_LEFTMOST)
        n = len(self.dets)
        for j, (_k, rx) in enumerate(self.user):
            try:  # prefilter mode: a superset of the pattern's matches
                t = _hs.Database()
                f = _hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_UTF8 | _hs.HS_FLAG_UCP | _hs.HS_FLAG_SINGLEMATCH
                t.compile(expressions=[rx.pattern.encode()], ids=[0], elements=1, flags=[f])
            except Exception:  # noqa: BLE001 - unsupported by Hyperscan: run it in Python everywhere
                self._always.append(j)
                continue
            exprs.append(rx.pattern.encode())
            ids.append(n + j)
            flags.append(f)
        # the same patterns without start-of-match tracking: a gate over whole serialised requests
        self.gate_exprs = [(e, 0 if i < n else f) for e, i, f in zip(exprs, ids, flags)]
        if not exprs:
            return
        db = _hs.Database()
        db.compile(expressions=exprs, ids=ids, elements=len(exprs), flags=flags)
        self.db = db

    @property
    def empty(self) -> bool:
        return not self.dets and not self.user

    def maybe(self, data: bytes) -> bool:
        """Could ``data`` (e.g. a serialised span) contain a match? Never False when a value inside has one,
        provided there are no patterns Hyperscan could not take."""
        if self.db is None or self._always:
            return True
        return any_match(self.db, data)

    def find(self, s: str) -> list[Match]:
        """Non-overlapping matches, leftmost first (longest at a tie)."""
        found: list[Match] = []
        if self.db is not None:
            b = s.encode("utf-8", "surrogatepass")
            hits: list[tuple[int, int]] = []
            self.db.scan(b, match_event_handler=lambda i, f, t, fl, c: hits.append((i, f)))
            if hits:
                ascii_ = len(b) == len(s)
                n = len(self.dets)
                seen: set[tuple[int, int]] = set()
                users: set[int] = set()
                for i, f in hits:
                    if (i, f) in seen:
                        continue
                    seen.add((i, f))
                    if i >= n:
                        users.add(i - n)
                        continue
                    pos = f if ascii_ else len(b[:f].decode("utf-8", "ignore"))
                    d = self.dets[i]
                    at = pos
                    if d.anchor_left:
                        j = pos
                        lo = max(0, pos - 64)
                        while j > lo and s[j - 1] in _LOCAL:
                            j -= 1
                        if j == pos:
                            continue
                        pos = j
                    m = self.strict[i].match(s, pos)
                    if m is None and d.anchor_left:
                        # the guard refused the first character: try the rest of the local part
                        for k in range(pos + 1, at):
                            m = self.strict[i].match(s, k)
                            if m:
                                break
                    if m is None or (d.validate is not None and not d.validate(m.group())):
                        continue
                    found.append((m.start(), m.end(), d.kind))
                for j in users:
                    kind, rx = self.user[j]
                    found.extend((m.start(), m.end(), kind) for m in rx.finditer(s) if m.end() > m.start())
        else:
            for d, rx in zip(self.dets, self.strict):
                for m in rx.finditer(s):
                    if d.validate is None or d.validate(m.group()):
                        found.append((m.start(), m.end(), d.kind))
        for j in self._always:
            kind, rx = self.user[j]
            found.extend((m.start(), m.end(), kind) for m in rx.finditer(s) if m.end() > m.start())
        if len(found) <= 1:
            return found
        found.sort(key=lambda x: (x[0], -x[1]))
        out: list[Match] = []
        end = -1
        for hit in found:
            if hit[0] >= end:
                out.append(hit)
                end = hit[1]
        return out
