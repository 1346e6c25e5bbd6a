"""The exposure report as Markdown, JSON or HTML (the HTML escapes every value)."""

from __future__ import annotations

import html
import json
from typing import Any

from vigie.incident.report import Report, summary


def to_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, default=str)


def _sections(report: Report) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, header, rows) for each table of the report."""
    a = report.audit
    return [
        (
            "Readable columns (class and action then)",
            ["table", "column", "class", "action", "from", "until"],
            [
                [r.table, r.column, r.data_class, r.action, r.since, r.until or "still"]
                for r in report.readable
            ],
        ),
        (
            "Sensitive data",
            ["kind", "readable", "never left production"],
            [
                [c.name, ", ".join(c.readable) or "none", ", ".join(c.withheld) or "-"]
                for c in report.categories
            ],
        ),
        (
            "Rows present at any moment of the window",
            ["table", "rows", "of which deleted since"],
            [[t.table, f"{t.present:,}", f"{t.deleted_since:,}"] for t in report.tables],
        ),
        (
            "Policies in force (evidence)",
            ["sha256", "in force from", "until", "runs"],
            [
                [
                    p["sha256"][:16],
                    p["in_force_from"],
                    p["until"] or "still",
                    ", ".join(map(str, p["runs"])),
                ]
                for p in report.policies
            ],
        ),
        (
            "Who read what (audit log)",
            ["actor", "role", "route", "requests", "rows", "from"],
            [
                [
                    r["actor"],
                    r["role"],
                    r["route"],
                    r["requests"],
                    r["rows"],
                    ", ".join(r["clients"]),
                ]
                for r in a.reads
            ],
        ),
        (
            "The guard",
            ["time", "event", "checks", "reason"],
            [
                [g["time"], g["event"], ", ".join(g["checks"]), g["reason"] or ""]
                for g in a.guard_events
            ],
        ),
        ("Rotations the playbook runs", ["step"], [[r] for r in report.rotations]),
    ]


def _facts(report: Report) -> list[str]:
    a = report.audit
    out = [
        f"Users affected (distinct pseudonyms): {report.users:,}",
        f"Devices affected: {report.devices:,}",
    ]
    if report.no_longer_stored:
        out.append(
            "Readable then, no longer stored (rows not countable): "
            + ", ".join(report.no_longer_stored)
        )
    if a.available:
        out.append(
            f"Requests without credentials: {a.unauthenticated:,} (from "
            f"{', '.join(a.unauthenticated_clients) or 'nobody'}); refused: {a.refused:,}"
        )
    else:
        out.append("Audit log: not available for this store")
    if report.exposure_seen_at:
        out.append(
            f"The guard saw the exposure at {report.exposure_seen_at} UTC; restored at "
            f"{report.restored_at or 'not within the window'}"
        )
    return out


def to_markdown(report: Report) -> str:
    lines = [
        f"# Exposure report: {report.store}",
        f"Window: {report.start} to {report.end} UTC (generated {report.generated_at} UTC)",
        "",
        "## Summary",
        "",
        summary(report),
        "",
    ]
    lines += [f"- {f}" for f in _facts(report)]
    for title, header, rows in _sections(report):
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("(none)")
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + " --- |" * len(header))
        lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_html(report: Report) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Exposure report {e(report.store)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;"
        "color:#1d2330}table{border-collapse:collapse;width:100%;font-size:.9rem}"
        "td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}</style></head>",
        f"<body><h1>Exposure report: {e(report.store)}</h1>",
        f"<p>Window: {e(str(report.start))} to {e(str(report.end))} UTC</p>",
        f"<h2>Summary</h2><p>{e(summary(report))}</p><ul>",
    ]
    parts += [f"<li>{e(f)}</li>" for f in _facts(report)]
    parts.append("</ul>")
    for title, header, rows in _sections(report):
        parts.append(f"<h2>{e(title)}</h2><table><tr>")
        parts += [f"<th>{e(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


RENDER = {"md": to_markdown, "json": to_json, "html": to_html}
