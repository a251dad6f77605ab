"""RFC 4287 checks on an Atom document, the rules feed readers and the W3C validator rely on."""

from __future__ import annotations

import re

from lxml import etree

ATOM = "{http://www.w3.org/2005/Atom}"
# RFC 3339 date-time as RFC 4287 section 3.3 requires (upper-case T and Z, offset allowed).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def check_atom(body: bytes, self_url: str | None = None) -> etree._Element:
    """Assert the RFC 4287 rules we promise; return the parsed root for further checks."""
    root = etree.fromstring(body)
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated"):
        assert len(root.findall(f"{ATOM}{name}")) == 1, f"feed must have exactly one {name}"
    assert RFC3339.match(root.findtext(f"{ATOM}updated"))
    selfs = [l for l in root.findall(f"{ATOM}link") if l.get("rel") == "self"]
    assert len(selfs) == 1, "feed must have one rel=self link"
    if self_url is not None:
        assert selfs[0].get("href") == self_url
    feed_has_author = root.find(f"{ATOM}author/{ATOM}name") is not None
    ids = []
    for entry in root.findall(f"{ATOM}entry"):
        for name in ("id", "title", "updated"):
            assert len(entry.findall(f"{ATOM}{name}")) == 1, f"entry must have exactly one {name}"
        for name in ("updated", "published"):
            for value in entry.findall(f"{ATOM}{name}"):
                assert RFC3339.match(value.text), value.text
        alternates = [l for l in entry.findall(f"{ATOM}link") if l.get("rel", "alternate") == "alternate"]
        assert len(alternates) == 1, "entry must have exactly one alternate link"
        assert feed_has_author or entry.find(f"{ATOM}author/{ATOM}name") is not None
        ids.append(entry.findtext(f"{ATOM}id"))
    assert len(ids) == len(set(ids)), "entry ids must be unique"
    return root


def entry_ids(root: etree._Element) -> list[str]:
    return [e.findtext(f"{ATOM}id") for e in root.findall(f"{ATOM}entry")]
