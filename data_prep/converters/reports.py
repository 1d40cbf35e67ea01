"""Report section parsing.

MIMIC-CXR: the rules of the dataset's own section parser (MIT-LCP/mimic-cxr,
``txt/section_parser.py``, MIT licence), re-implemented here:

* a section starts at a line that begins with a space and an upper-case header followed by a
  colon (``\\n HEADER:``); text before the first header is the ``preamble``; the search for
  the next header resumes after the first line break following a header;
* header names are lower-cased and normalised: ~60 frequent variants and misspellings
  (``conclusion`` -> impression, ``findings/impression`` -> impression, ``impresson`` ...);
  any header containing impression / findings / history / comparison / addendum becomes that
  name; headers describing the whole study (``chest, pa and lateral``, ``portable ap view``,
  ...) count as findings;
* empty findings / impression sections are dropped, and when neither exists the final
  paragraph becomes ``last_paragraph``;
* as in the dataset's ``create_section_files.py``, the LAST occurrence of a section is the one
  kept, so an addendum placed before a rewritten report does not shadow it.

Returned texts have their whitespace collapsed to single spaces.
"""

from __future__ import annotations

import re

SECTION_RE = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)

FREQUENT_SECTIONS = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    "ndication": "impression",  # sic: as in the dataset's parser
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
STUDY_DESCRIPTION_RE = re.compile(
    "|".join(
        (
            "chest",
            "portable",
            "pa and lateral",
            "lateral and pa",
            "ap and lateral",
            "lateral and ap",
            "frontal and",
            "two views",
            "frontal view",
            "pa view",
            "ap view",
            "one view",
            "lateral view",
            "bone window",
            "frontal upright",
            "frontal semi-upright",
            "ribs",
            "pa and lat",
        )
    )
)


def normalize_section_name(name: str) -> str:
    s = name.lower().strip()
    if s in FREQUENT_SECTIONS:
        return FREQUENT_SECTIONS[s]
    for main in MAIN_SECTIONS:
        if main in s:
            return main
    return "findings" if STUDY_DESCRIPTION_RE.search(s) else s


def section_text(text: str) -> tuple[list[str], list[str]]:
    """(section texts, normalised section names) in report order."""
    sections: list[str] = []
    names: list[str] = []
    m = SECTION_RE.search(text)
    if m is None:
        sections, names = [text], ["full report"]
    else:
        sections.append(text[: m.start(1)])
        names.append("preamble")
        while m is not None:
            name = m.group(1)
            start = m.end()
            skip = text.find("\n", start)
            m = SECTION_RE.search(text, skip if skip != -1 else start)
            sections.append(text[start : m.start() if m else len(text)])
            names.append(name)
    names = [normalize_section_name(n) for n in names]
    for i in reversed(range(len(names))):
        if names[i] in ("impression", "findings") and not sections[i].strip():
            del sections[i], names[i]
    if "impression" not in names and "findings" not in names and "\n \n" in sections[-1]:
        first, *rest = sections[-1].split("\n \n")
        sections[-1] = first
        sections.append("\n \n".join(rest))
        names.append("last_paragraph")
    return sections, names


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def mimic_sections(text: str) -> dict[str, str]:
    """Normalised section name -> text of its LAST occurrence (whitespace collapsed)."""
    sections, names = section_text(text)
    out: dict[str, str] = {}
    for name, body in zip(names, sections):
        out[name] = clean(body)
    return out


def findings_impression(text: str) -> tuple[str, str]:
    """(FINDINGS, IMPRESSION) of a MIMIC-CXR report; "" for a missing section."""
    s = mimic_sections(text)
    return s.get("findings", ""), s.get("impression", "")
