"""The audit document (:mod:`hspi_onnx.match.audit`) as one self-contained HTML file: inline CSS,
plots as inline SVG drawn here, no script, no font, no image or link to fetch. A Content Security
Policy forbids every load, so the report opens the same with no network, and a browser reports
any attempt as a console error (tests/test_llm_audit.py opens it in headless Chromium).

Each request's plot shows the per-token deviation (log scale, nats) of the answers from the best
matching DB platform and from the nearest claimed one; 0 is drawn on the floor line, a position
whose first alternative the platform does not rank at the top, and where the token path parts
from a platform a marker is set.
"""

from __future__ import annotations

import html
import json
import math

FLOOR = 1e-9  # deviations at or below this (0 included) are drawn on the floor line
TOP = 10.0
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 560, 200, 56, 34, 14, 14
COLOURS = {"best": "#1f77b4", "claimed": "#d62728"}
VERDICT_COLOURS = {"CONSISTENT": "#1b7f3a", "INCONSISTENT": "#b3261e", "INCONCLUSIVE": "#8a6d00"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.verdict{font-size:1.6em;font-weight:bold;padding:.4em .8em;border-radius:.3em;color:#fff;display:inline-block}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top;font-size:.9em} th{background:#f4f4f4} code{font-size:.85em;word-break:break-all}
.plots{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0} figcaption{font-size:.85em;color:#555}
.small{font-size:.85em;color:#555}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _y(v: float) -> float:
    lo, hi = math.log10(FLOOR), math.log10(TOP)
    t = (math.log10(min(max(v, FLOOR), TOP)) - lo) / (hi - lo)
    return PAD_T + (1 - t) * (H - PAD_T - PAD_B)


def plot(request: dict, n: int) -> str:
    """One request's deviation plot as SVG (``n``: positions on the x axis)."""
    n = max(n, 1)

    def x(j: int) -> float:
        return PAD_L + (j + 0.5) * (W - PAD_L - PAD_R) / n

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'class="deviation-plot" data-probe="{_e(request["probe_id"])}">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" '
        'fill="#fafafa" stroke="#999"/>',
    ]
    for p in range(-9, 2):
        y = _y(10.0**p)
        label = "0" if p == -9 else f"1e{p}"
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        if p % 2 == 1 or p == -9:
            parts.append(f'<text x="{PAD_L - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{label}</text>')
    for j in range(n):
        if n <= 32 or j % 4 == 0:
            parts.append(f'<text x="{x(j):.1f}" y="{H - PAD_B + 12}" font-size="9" text-anchor="middle">{j}</text>')
    parts.append(f'<text x="{(W + PAD_L) / 2}" y="{H - 4}" font-size="10" text-anchor="middle">generated token</text>')
    parts.append(
        f'<text x="12" y="{(H - PAD_B + PAD_T) / 2}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 12 {(H - PAD_B + PAD_T) / 2})">deviation (nats)</text>'
    )
    for which in ("claimed", "best"):
        dev = request.get(which)
        if not dev:
            continue
        colour = COLOURS[which]
        points = [(x(j), _y(v)) for j, v in enumerate(dev["deviation"]) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for a, b in points:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{colour}" class="pt-{which}"/>')
        for j in dev["outside_top_k"]:
            parts.append(
                f'<text x="{x(j):.1f}" y="{PAD_T + 10}" font-size="10" fill="{colour}" text-anchor="middle">?</text>'
            )
        if dev["parted_at"] is not None:
            a = x(dev["parted_at"])
            parts.append(
                f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="{colour}" '
                'stroke-dasharray="4 3"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[list], head: list[str]) -> str:
    out = ["<table><tr>", *[f"<th>{_e(h)}</th>" for h in head], "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _estimates(est: dict | None) -> list[str]:
    """The estimates section, where the stack is not in the DB (docs/llm-estimates.md)."""
    if est is None:
        return []
    out = ["<h2>Estimates for a stack outside the DB</h2>"]
    if est["status"] != "estimated":
        return out + [f"<p>{_e(est['status'])}.</p>"]
    rows = [
        [_e(attr), ", ".join(f"{_e(c)} ({p:.2f})" for c, p in probs.items())]
        for attr, probs in est["attributes"].items()
    ]
    rows.append(["logits' grid", ", ".join(f"{_e(d)} {s:.0%}" for d, s in est["logits"].items())])
    rows.append(["nearest DB platforms", "<br>".join(f"<code>{_e(n['platform'])}</code>" for n in est["nearest"])])
    return out + [
        f'<p class="small">From {_e(est["requests"])} answers against <code>{_e(est["reference"])}</code> '
        "teacher-forced on their tokens; probabilities calibrated leaving each DB stack out.</p>",
        _table(rows, ["attribute", "classes (probability)"]),
    ]


def render(doc: dict) -> str:
    """The HTML report of an audit document."""
    verdict = doc["verdict"]
    s = doc["strength"]
    claim = ",".join(f"{k}={v}" for k, v in doc["claim"].items())
    body = [
        "<h1>hspi audit</h1>",
        f"<p>Endpoint <code>{_e(doc.get('url') or '-')}</code>, claim <code>{_e(claim)}</code>, "
        f"created {_e(doc['created'])}.</p>",
        f'<p id="verdict" class="verdict" style="background:{VERDICT_COLOURS.get(verdict, "#555")}">{_e(verdict)}</p>',
        f"<p>{_e(doc['reason'])}.</p>",
        f'<p id="strength">{_e(s["summary"])}.</p>',
        "<h2>Verdict and its strength</h2>",
        _table(
            [
                ["requests", _e(s["requests"])],
                ["generated tokens compared", _e(s["tokens"])],
                ["evidence", _e(s["evidence"])],
                ["DB classes of this model and chat set", _e(s["db_classes"])],
                ["classes the answers leave", _e(s["classes_left"])],
                ["claimed platforms in the DB", _e(s["claimed_platforms_in_db"])],
                [
                    "requests differing from the nearest claimed platform",
                    _e(s.get("requests_differing_from_claimed", "-")),
                ],
                [
                    "best match" + (" (consistent with every answer)" if doc["best_match_fits"] else " (nearest)"),
                    f"<code>{_e(doc['best_match'])}</code>",
                ],
                ["nearest claimed platform", f"<code>{_e(doc.get('nearest_claimed') or '-')}</code>"],
            ],
            ["", ""],
        ),
        "<h2>DB classes consistent with the answers</h2>",
    ]
    classes = doc["match"]["classes"]
    if classes:
        body.append(
            _table(
                [[_e(c["id"]), "<br>".join(f"<code>{_e(p)}</code>" for p in c["platforms"])] for c in classes],
                ["class", "platforms"],
            )
        )
    else:
        body.append("<p>None: the stack that answered is not in the DB.</p>")
    body += _estimates(doc["match"].get("estimates"))
    body.append("<h2>Per-token deviation, per request</h2>")
    body.append(
        '<p class="small">Largest difference, over the returned top-k alternatives, of the log-probabilities '
        "relative to the first alternative (nats, log scale; 0 drawn on the floor). "
        f'<span style="color:{COLOURS["best"]}">&#9632; best match</span> '
        f'<span style="color:{COLOURS["claimed"]}">&#9632; nearest claimed platform</span>; '
        "dashed line: the answer's token leaves that platform's greedy path; ?: its first alternative is not in "
        "the platform's top-k.</p>"
    )
    plots = []
    for r in doc["requests"]:
        n = max(len((r.get(w) or {}).get("deviation", [])) for w in ("best", "claimed"))
        n = max(n, r["tokens"] or 0)
        has_values = any(v is not None for w in ("best", "claimed") for v in (r.get(w) or {}).get("deviation", []))
        caption = f"chat {r['probe_id']}: fits best match: {'yes' if r['fits_best'] else 'no'}, fits claimed: " + (
            "yes" if r["fits_claimed"] else "no"
        )
        if not has_values:
            caption += " (no log-probabilities: compared by text)"
        plots.append(f"<figure>{plot(r, n)}<figcaption>{_e(caption)}</figcaption></figure>")
    body.append('<div class="plots">' + "".join(plots) + "</div>")
    body.append("<h2>Request log</h2>")
    body.append(
        _table(
            [
                [
                    _e(r["probe_id"]),
                    _e(r["status"]),
                    _e(r["latency_s"]),
                    _e(r["attempts"]),
                    _e(r["tokens"]),
                    _e(r["evidence"]),
                    _e(r["finish_reason"]),
                    f"<code>{_e(json.dumps(r['server']))}</code>",
                    _e(r["text"] if r["text"] is not None else ""),
                ]
                for r in doc["request_log"]
            ],
            ["chat", "HTTP", "latency s", "attempts", "tokens", "evidence", "finish", "server said", "text"],
        )
    )
    body.append("<h2>Versions and provenance</h2>")
    rows = [[_e(k), f"<code>{_e(v)}</code>"] for k, v in doc["versions"].items()]
    rows += [["reference DB", f"<code>{_e(doc['db'])}</code>"], ["answers file", f"<code>{_e(doc['answers'])}</code>"]]
    if doc.get("command"):
        rows.append(["command", f"<code>{_e(' '.join(doc['command']))}</code>"])
    body.append(_table(rows, ["", ""]))
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>hspi audit: {_e(verdict)}</title><style>{CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
