"""One note, rendered for a clinician in the terminal."""
from __future__ import annotations

from .extract import NoteResult
from .labels import LABELS

_CUE_NAMES = {"fhx": "family history section", "pmh": "past history section", "psh": "past surgical history section",
              "instructions": "instructions section"}


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render(result: NoteResult) -> str:
    s = result.summary
    lines = []
    facts = [f"age {s['age']}" if s["age"] is not None else "age not stated"]
    if s["duration_days"] is not None:
        facts.append(f"duration {s['duration_days']} days ({s['duration_class']})")
    else:
        facts.append(f"duration {s['duration_class']}")
    facts.append("in scope for the imaging audit" if s["in_scope"] else "not a back-pain note (out of scope)")
    lines.append("Note " + result.note_id + ": " + ", ".join(facts))
    lines.append("")
    if not result.findings:
        lines.append("No findings.")
    else:
        lines.append(f"{'FINDING':<28}{'ASSERTION':<14}{'SIDE':<12}{'SECTION':<14}EVIDENCE")
        for f in sorted(result.findings, key=lambda f: (f.start, f.label)):
            side = f.laterality if f.laterality != "unspecified" else "-"
            evidence = f'"{_clip(f.text, 40)}"'
            if f.assertion != "present" and f.cue:
                cue = _CUE_NAMES.get(f.cue, None) if f.cue_rule_id and f.cue_rule_id.startswith("SEC-") else None
                evidence += f"  ← {cue or repr(_clip(f.cue, 30))}"
            if f.progressive:
                evidence += "  [progressive]"
            lines.append(f"{f.label:<28}{f.assertion:<14}{side:<12}{(f.section or '-'):<14}{evidence}  {f.rule_id}")
    lines.append("")
    lines.append("Summary for the patient now")
    for status in ("present", "possible", "absent"):
        labels = [label for label in LABELS if s[label] == status]
        lines.append(f"  {status + ':':<14}{', '.join(labels) if labels else '-'}")
    silent = sorted({f.label for f in result.findings if s[f.label] is None})
    if silent:
        lines.append(f"  {'not counted:':<14}{', '.join(silent)} (family, hypothetical or past mentions only)")
    lines.append(f"  bilateral deficit: {'yes' if s['bilateral_deficit'] else 'no'};"
                 f" progressive deficit: {'yes' if s['progressive_deficit'] else 'no'}")
    return "\n".join(lines)
