"""The markdown summary of a `make bench` run (bench/results/latest.md), rendered from the results dict.

Pure: it reads what the benchmark modules wrote (their `targets`, built by `shopbotly.bench.targets`, and a
few headline figures) and never fails on a partial run; a benchmark that failed is listed with its error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from shopbotly.bench.targets import figure_text

__all__ = ["SUITE_ORDER", "failures", "render", "target_rows"]

# The order benchmarks appear in; anything else found in the results comes after, in its own order.
SUITE_ORDER = ("ingest", "mapper", "crm", "lookups", "replay", "ledger", "e2e", "e2e_one_connection_down")


def _suites(results: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    names = [n for n in SUITE_ORDER if n in results]
    names += [n for n in results if n not in SUITE_ORDER and n not in ("machine", "memory_rss_mib")]
    for name in names:
        if isinstance(results[name], dict):
            yield name, results[name]


def _walk_targets(value: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, item in value.items():
        if key == "targets" and isinstance(item, dict):
            for name, entry in item.items():
                if isinstance(entry, dict):
                    yield name, entry
                else:  # a bare yes/no, from a module not reporting figures
                    yield name, {"what": name, "figure": None, "target": "", "met": entry, "margin": ""}
        elif isinstance(item, dict):
            yield from _walk_targets(item)


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(benchmark, target name, target) for every target found in the results, in benchmark order."""
    return [(suite, name, entry) for suite, value in _suites(results) for name, entry in _walk_targets(value)]


def failures(results: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(benchmark, error, log file) for every benchmark that did not finish."""
    return [
        (suite, str(value["error"]), value.get("log"))
        for suite, value in _suites(results)
        if value.get("error") is not None
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _met(met: Any) -> str:
    if met is True:
        return "yes"
    if met is False:
        return "**no**"
    return "not measured"


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _n(value: Any, unit: str = "") -> str:
    return figure_text(value, unit) if isinstance(value, int | float) else "—"


def _ingest(r: dict[str, Any]) -> str:
    half = r.get("ingest_half_rate", {})
    ingest, bare = _get(r, "ingest", "accepted_per_s_median"), _get(r, "bare", "accepted_per_s_median")
    p50, p99 = _get(half, "latency_ms", "p50"), _get(half, "latency_ms", "p99")
    return (
        f"ingest: {_n(ingest)} signed 1 KiB webhooks accepted/s vs bare FastAPI 202 {_n(bare)}/s "
        f"(ratio {_n(r.get('ratio_vs_bare'))}); at half that rate ({_n(half.get('target_per_s'))}/s) "
        f"p50 {_n(p50, 'ms')}, p99 {_n(p99, 'ms')}; {_n(r.get('stored_on_topic'))} records on the topic "
        f"for {_n(r.get('ingest_accepted_total'))} 202 answers"
    )


def _mapper(r: dict[str, Any]) -> str:
    k = r.get("kafka", {})
    pure, copy = _get(r, "pure", "events_per_s"), k.get("baseline_copy_events_per_s")
    return (
        f"mapper: {_n(k.get('events_per_s'))} events/s through Kafka, one process "
        f"({_n(k.get('worker_cpu_us_per_event'), 'µs')} CPU per event); pure mapping {_n(pure)}/s; "
        f"bare aiokafka copy {_n(copy)}/s (ratio {_n(k.get('ratio_to_baseline'))}); "
        f"{_n(r.get('events'))} events"
    )


def _crm(r: dict[str, Any]) -> str:
    c, bot = r.get("crm", {}), r.get("bot_latency", {})
    steady, ceiling = c.get("steady_contacts_per_s"), c.get("ceiling_contacts_per_s")
    return (
        f"CRM: {_n(steady)} contacts/s vs ceiling {_n(ceiling)} ({c.get('limit', '?')}, batch "
        f"{_n(c.get('batch_size'))}): ratio {_n(c.get('ratio_to_ceiling'))}; 429s {_n(c.get('crm_429s'))} "
        f"of {_n(c.get('crm_requests'))} requests; bot notifications at {_n(bot.get('rate_per_s'))}/s: "
        f"p50 {_n(_get(bot, 'latency_ms', 'p50'), 'ms')}, p99 {_n(_get(bot, 'latency_ms', 'p99'), 'ms')}"
    )


def _lookups(r: dict[str, Any]) -> str:
    t, at = r.get("throughput", {}), r.get("latency_at_rate", {})
    spread: dict[str, Any] = next((v for k, v in t.items() if k.startswith("order_random_over_")), {})
    hot, base = _get(t, "order_hot_10k_ids", "requests_per_s"), _get(t, "baseline_constant", "requests_per_s")
    p99, p99_bare = _get(at, "order_lookup", "p99_ms"), _get(at, "baseline_constant", "p99_ms")
    return (
        f"lookups: {_n(hot)}/s (cache hits) and {_n(spread.get('requests_per_s'))}/s (ids over all "
        f"{_n(r.get('orders'))} orders) vs bare GET {_n(base)}/s; p99 at {_n(at.get('rate_per_s'))}/s "
        f"{_n(p99, 'ms')} (bare {_n(p99_bare, 'ms')}); cold rebuild "
        f"{_n(_get(r, 'cold_rebuild', 'spawn_to_ready_s'), 's')}"
    )


def _replay(r: dict[str, Any]) -> str:
    replay, baseline = r.get("replay", {}), r.get("baseline", {})
    return (
        f"replay: `shopbotly replay` {_n(replay.get('events_per_s'))} events/s vs bare aiokafka copy "
        f"{_n(baseline.get('events_per_s'))} events/s: ratio {_n(r.get('ratio_vs_baseline'))}; "
        f"{_n(r.get('records'))} records of {_n(r.get('record_bytes'))} B; CLI wall time "
        f"{_n(replay.get('wall_s'), 's')}, of which {_n(replay.get('outside_copy_s'), 's')} outside the copy "
        f"(start-up alone {_n(r.get('cli_startup_s'), 's')}); CPU {_n(replay.get('cpu_us_per_event'), 'µs')} "
        f"per event vs "
        f"{_n(baseline.get('cpu_us_per_event'), 'µs')}"
    )


def _ledger(r: dict[str, Any]) -> str:
    ledger, old, plain = r.get("ledger", {}), r.get("dict", {}), r.get("set", {})
    return (
        f"ledger: {_n(ledger.get('rss_mb_per_million'), 'MB')} RSS per million applied ids vs "
        f"{_n(old.get('rss_mb_per_million'), 'MB')} for the old dict "
        f"(ratio {_n(r.get('memory_ratio_vs_dict'))}) "
        f"and {_n(plain.get('rss_mb_per_million'), 'MB')} for a bare set of the ids; lookups of new ids "
        f"{_n(ledger.get('miss_lookups_per_s'))}/s vs a set's {_n(plain.get('miss_lookups_per_s'))}/s "
        f"(ratio {_n(r.get('miss_lookup_ratio_vs_set'))}); {_n(ledger.get('false_negatives'))} applied ids "
        f"missed of {_n(r.get('lookups'))} looked up; {_n(r.get('ids'))} ids"
    )


def _e2e(r: dict[str, Any]) -> str:
    line = (
        f"end to end at {_n(r.get('achieved_rate_per_s'))}/s for {_n(r.get('seconds'))} s "
        f"(asked {_n(r.get('rate_target_per_s'))}/s): p50 {_n(r.get('e2e_p50_ms'), 'ms')}, "
        f"p99 {_n(r.get('e2e_p99_ms'), 'ms')}, lost {_n(r.get('lost'))}"
    )
    if r.get("rate_target_per_s") != 500 or r.get("seconds") != 60:
        line += " (a short run: the issue's figure is 500/s for 60 s)"
    return line


def _one_down(r: dict[str, Any]) -> str:
    return (
        f"the same run with the bot endpoint down (its notifications held back): HubSpot p50 "
        f"{_n(r.get('one_down_p50_ms'), 'ms')} vs {_n(r.get('healthy_p50_ms'), 'ms')} all up, p99 "
        f"{_n(r.get('one_down_p99_ms'), 'ms')} vs {_n(r.get('healthy_p99_ms'), 'ms')}, "
        f"lost {_n(r.get('one_down_lost'))}"
    )


_HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "ingest": _ingest,
    "mapper": _mapper,
    "crm": _crm,
    "lookups": _lookups,
    "replay": _replay,
    "ledger": _ledger,
    "e2e": _e2e,
    "e2e_one_connection_down": _one_down,
}


def render(results: dict[str, Any], chart: str | None = None) -> str:
    """latest.md: the machine, every target with its figure and margin, failures, headline figures, and a
    link to `chart` (the history picture, a path relative to latest.md) when there is one."""
    m = results.get("machine", {})
    load = m.get("load_average_at_start") or [None]
    lines = [
        "# Benchmark results",
        "",
        f"Commit `{m.get('commit')}`, {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
        f"Python {m.get('python')}, Kafka {m.get('kafka')}, started {m.get('started_at')} "
        f"(load average at start {_n(load[0])}).",
        "Every ratio compares with a baseline measured in the same run on the same machine.",
        "",
        "## Targets",
        "",
        "| benchmark | figure | measured | target | met | by how much |",
        "|---|---|---|---|---|---|",
    ]
    rows = target_rows(results)
    for suite, name, t in rows:
        lines.append(
            f"| {suite} | {_cell(t.get('what') or name)} | "
            f"{_cell(figure_text(t.get('figure'), t.get('unit', '')))} | {_cell(t.get('target', ''))} | "
            f"{_met(t.get('met'))} | {_cell(t.get('margin', ''))} |"
        )
    failed = failures(results)
    for suite, error, _ in failed:
        lines.append(f"| {suite} | (benchmark failed) | — | — | **failed** | {_cell(error)} |")
    met = sum(1 for *_, t in rows if t.get("met") is True)
    missed = sum(1 for *_, t in rows if t.get("met") is False)
    unmeasured = len(rows) - met - missed
    lines += [
        "",
        f"{met} of {len(rows)} targets met, {missed} missed, {unmeasured} not measured; "
        f"{len(failed)} benchmark(s) failed.",
    ]
    if failed:
        lines += ["", "## Failed benchmarks", ""]
        for suite, error, log in failed:
            lines.append(f"- {suite}: {error}" + (f" (log: `{log}`)" if log else ""))
    lines += ["", "## Headline figures", ""]
    for suite, value in _suites(results):
        headline = _HEADLINES.get(suite)
        if headline is None or value.get("error") is not None:
            continue
        try:
            lines.append(f"- {headline(value)}")
        except (AttributeError, TypeError, KeyError) as exc:  # a partial result must not lose the summary
            lines.append(f"- {suite}: figures incomplete ({type(exc).__name__}: {exc}); see latest.json")
    memory = results.get("memory_rss_mib")
    if isinstance(memory, dict):
        idle, load = memory.get("idle") or {}, memory.get("under_load") or {}
        shown = ", ".join(f"{name} {_n(idle.get(name))} → {_n(load.get(name))}" for name in {**idle, **load})
        lines.append(f"- RSS of each stack service, idle → peak under the end-to-end load (MiB): {shown}")
    if lines[-1] == "":
        lines.append("(none: no benchmark finished)")
    if chart:
        lines += ["", "## Over the runs", "", f"![each target over the runs]({chart})", ""]
        lines.append(f"Every run's figures: `bench/results/history.csv`; the chart: [{chart}]({chart}).")
    lines += ["", "Full figures: `bench/results/latest.json`; how to read them: `docs/benchmarks.md`."]
    return "\n".join(lines) + "\n"
