"""Turning results into a text table, a Markdown table and a PNG chart."""

from __future__ import annotations

import math
from typing import Any

LEGEND = (
    "advantage: > 1 means atomr is better. Throughput rows: atomr / LangGraph; "
    "latency and size rows: LangGraph / atomr (so 30x = atomr's store is 30 times smaller)."
)


def _fmt_num(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "bytes":
        for div, suffix in ((1 << 20, " MiB"), (1 << 10, " KiB")):
            if v >= div:
                return f"{v / div:.1f}{suffix}"
        return f"{int(v)} B"
    if unit == "threads":
        return f"{v:.0f}"
    if unit == "ms":
        return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"
    if v >= 100:
        return f"{v:,.0f}/s"
    return f"{v:.2f}/s"


def _side(side: dict[str, Any] | None, unit: str, spread: bool) -> str:
    if not side or side.get("value") is None:
        return "-"
    text = _fmt_num(side["value"], unit)
    if spread and side.get("n", 1) > 1:
        text += f" [{_fmt_num(side['min'], unit).removesuffix('/s')}..{_fmt_num(side['max'], unit)}]"
    return text


def _adv(row: dict[str, Any]) -> str:
    a = row.get("advantage")
    return "-" if a is None else f"{a:.2f}x"


def _target(row: dict[str, Any]) -> str:
    lim = row.get("limit")
    if lim is not None:
        return f"atomr {'<=' if row['better'] == 'lower' else '>='} {lim:g}"
    t = row.get("target")
    return "-" if t is None else f">= {t:g}x"


def _met(row: dict[str, Any]) -> str:
    m = row.get("meets_target")
    return "-" if m is None else ("yes" if m else "NO")


def all_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of every workload, the headline row(s) first, then in workload order."""
    rows = [r for wl in results["workloads"].values() for r in wl.get("rows", [])]
    return [r for r in rows if r.get("headline")] + [r for r in rows if not r.get("headline")]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """The table's cells: the headline row(s) first, then each workload's rows in order."""
    out = [_row_cells(r) for r in all_rows(results) if r.get("headline")]
    for name, wl in results["workloads"].items():
        if "error" in wl:
            out.append([name, "ERROR", wl["error"].strip().splitlines()[-1][:60], "", "", "", ""])
            continue
        out.extend(_row_cells(r) for r in wl["rows"] if not r.get("headline"))
        for skip in wl.get("skipped", []):
            out.append([skip["id"], "SKIPPED", skip["reason"].split(": ")[0][:70], "", "", "", ""])
    return out


def _row_cells(row: dict[str, Any]) -> list[str]:
    spread = row["stat"] == "median"
    label = row["id"] + ("" if not row.get("note") else " *")
    stat = {"median": "median", "value": "", "p50": "p50", "p99": "p99", "max": "peak"}[row["stat"]]
    unit = row["unit"] + (f" ({stat})" if stat else "")
    return [
        label, unit, _side(row["atomr"], row["unit"], spread),
        _side(row["langgraph"], row["unit"], spread), _adv(row), _target(row), _met(row),
    ]


def summary(results: dict[str, Any]) -> list[str]:
    """The lines printed above the table: the headline comparison, then targets met."""
    lines = []
    for r in all_rows(results):
        if not r.get("headline"):
            continue
        def num(side: dict[str, Any] | None) -> str:
            return _side(side, r["unit"], False).removesuffix("/s")

        figures = f"atomr {num(r['atomr'])}"
        if r["langgraph"]:
            figures += f" vs LangGraph {num(r['langgraph'])}"
        lines.append(f"Headline: {r['label']}: {_adv(r)} ({figures} {r['unit']}, {r['stat']}; "
                     f"target {_target(r)}: {_met(r)})")
    judged = [r for r in all_rows(results) if r.get("meets_target") is not None]
    if judged:
        missed = [r["id"] for r in judged if not r["meets_target"]]
        lines.append(f"Targets met: {len(judged) - len(missed)} of {len(judged)}"
                     + (f" (missed: {', '.join(missed)})" if missed else ""))
    return lines


HEADER = ["workload", "metric", "atomr", "LangGraph", "advantage", "target", "met"]


def notes(results: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for wl in results["workloads"].values():
        for row in wl.get("rows", []):
            if row.get("note") and row["note"] not in seen:
                seen.append(row["note"])
    return seen


def text_table(results: dict[str, Any]) -> str:
    rows = table_rows(results)
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [*summary(results), ""] if summary(results) else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    lines.append(LEGEND)
    for n in notes(results):
        lines.append(f"* {n}")
    return "\n".join(lines)


def _git_note(results: dict[str, Any]) -> str:
    g = results.get("git")
    if not g:
        return ""
    dirty = g.get("atomr_uncommitted_paths") or 0
    return f"; commit {g['commit'][:10]}" + (f" (+{dirty} uncommitted paths under atomr/)" if dirty else "")


def markdown_table(results: dict[str, Any]) -> str:
    rows = table_rows(results)
    lines = []
    for x in summary(results):
        lines += [f"**{x}**" if x.startswith("Headline") else x, ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    m = results["machine"]
    lines.append("")
    lines.append(
        f"{results['mode']} mode, {results['reps']} rep(s); {m['platform']}, {m['cpu_count']} CPUs, "
        f"Python {m['python']}, load average at start {m['loadavg_start']}; {results['date']}"
        + _git_note(results) + "."
    )
    lines.append("")
    lines.append(LEGEND)
    for n in notes(results):
        lines.append(f"\n\\* {n}")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: str) -> None:
    """A horizontal bar chart of the advantage per row (log scale), 1.0 line, targets marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plotted = [r for r in all_rows(results) if r.get("advantage")]
    height = max(3.0, 0.42 * len(plotted) + 1.6)
    fig, ax = plt.subplots(figsize=(10, height))
    if not plotted:
        ax.axis("off")
        why = "LangGraph was not importable: atomr-only figures, see the JSON" if not results["langgraph"]["available"] \
            else "no comparison could be made (see errors in the JSON)"
        ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=12)
    else:
        ys = list(range(len(plotted)))[::-1]
        advs = [r["advantage"] for r in plotted]
        colors = []
        for r in plotted:
            if r["meets_target"] is True or (r["target"] is None and r["advantage"] >= 1):
                colors.append("#2e8b57")
            elif r["meets_target"] is False:
                colors.append("#c0392b")
            else:
                colors.append("#e67e22")
        ax.barh(ys, advs, color=colors, height=0.6)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=1.2, label="1.0 (parity)")
        first = True
        for y, r in zip(ys, plotted, strict=True):
            if r["target"] is not None:
                ax.plot([r["target"]], [y], marker="D", color="#1f3a93", markersize=7, linestyle="none",
                        label="target" if first else None)
                first = False
            ax.text(r["advantage"], y, f" {r['advantage']:.2f}x", va="center", fontsize=8)
        ax.set_yticks(ys)
        ax.set_yticklabels([r["id"] for r in plotted], fontsize=8)
        lo = min(min(advs), 1.0)
        hi = max([*advs, *[r["target"] for r in plotted if r["target"]], 1.0])
        ax.set_xlim(lo / 2, hi * 3)
        ax.set_xlabel("atomr advantage (x, log scale; > 1 = atomr better: throughput atomr/LG, "
                      "latency & size LG/atomr)", fontsize=8)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.25)
    m = results["machine"]
    ax.set_title(f"atomr vs LangGraph - {results['mode']} mode, {results['reps']} rep(s), "
                 f"{m['cpu_count']} CPUs, load {m['loadavg_start']} - {results['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
