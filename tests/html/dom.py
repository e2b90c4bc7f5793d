"""The figures a rendered page shows: every element with a ``data-*`` attribute the
report pages mark, with its text, read from Chromium's serialised DOM."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import ClassVar


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    parents: list[dict[str, str]] = field(default_factory=list)


class Figures(HTMLParser):
    """Elements carrying data-* attributes, their text, and the data-* of their parents."""

    # HTML's void elements; Chromium writes SVG elements out with their end tags.
    VOID: ClassVar[frozenset[str]] = frozenset(
        {
            "area",
            "base",
            "br",
            "col",
            "embed",
            "hr",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "wbr",
        }
    )

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[Element] = []
        self.found: list[Element] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        element.parents = [e.attrs for e in self.stack]
        if any(k.startswith("data-") for k in element.attrs):
            self.found.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        element.parents = [e.attrs for e in self.stack]
        if any(k.startswith("data-") for k in element.attrs):
            self.found.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.text += data

    def text(self, attr: str, value: str | None = None) -> str:
        """The text of the one element whose ``attr`` is ``value`` (or that has ``attr``)."""
        hits = [e for e in self.found if attr in e.attrs and value in (None, e.attrs[attr])]
        assert len(hits) == 1, (attr, value, len(hits))
        return hits[0].text.strip()

    def number(self, attr: str, value: str | None = None) -> float:
        return float(self.text(attr, value).replace(",", ""))

    def values(self, attr: str) -> dict[str, str]:
        """``attr``'s value -> text, for every element with ``attr``."""
        return {e.attrs[attr]: e.text.strip() for e in self.found if attr in e.attrs}

    def in_chart(self, chart: str, attr: str) -> list[str]:
        """``attr`` of every element inside the SVG chart ``chart``."""
        return [
            e.attrs[attr]
            for e in self.found
            if attr in e.attrs and any(p.get("data-chart") == chart for p in e.parents)
        ]
