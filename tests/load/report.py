"""The human-readable summary of a bench report (the JSON holds everything)."""

from __future__ import annotations


def _ms(latency: dict) -> str:
    if not latency or not latency.get("count"):
        return "n/a"
    return (f"p50 {latency['p50']} ms  p95 {latency['p95']} ms  p99 {latency['p99']} ms  "
            f"max {latency['max']} ms  ({latency['count']} samples)")


def _short(metric: str) -> str:
    """``chat_broker_published_messages_total{exchange="chat.events",kind="message"}`` ->
    ``published{chat.events,message}``."""
    for noise in ("chat_broker_", "chat_", "_messages_total", "_total", '"'):
        metric = metric.replace(noise, "")
    for label in ("exchange=", "queue=", "kind=", "outcome=", "type=", "routing_key=", "why="):
        metric = metric.replace(label, "")
    return metric


def render(report: dict) -> str:
    lg = report.get("loadgen", {})
    cfg, setup = lg.get("config", {}), lg.get("setup", {})
    code = report.get("code") or {}
    lines = ["", "=== chat bench " + ("(idle connections) " if cfg.get("idle") else "")
             + f"at {code.get('commit')}"
             + (f" + changes to {len(code['changed_service_files'])} service files"
                if code.get("changed_service_files") else "") + " " + "=" * 20]
    lines.append(f"connections {cfg.get('connections')} in {cfg.get('sessions')} sessions "
                 f"({cfg.get('sessions_of_2')} of 2, {cfg.get('sessions_of_3')} of 3); "
                 f"joined {setup.get('connected')} in {setup.get('connect_s')} s "
                 f"({setup.get('connects_per_s')}/s; join {_ms(setup.get('join_ms', {}))})")
    if "presence_join_state" in setup:
        state = setup["presence_join_state"]
        lines.append(f"presence answer of the joins: {state.get('late', 0)} late (sent after "
                     f"joined), {state.get('unavailable', 0)} never; the others on time")
    if not cfg.get("idle"):
        lines.append(f"offered {cfg.get('rate')} msg/s for {cfg.get('warmup_s')} s warm-up + "
                     f"{cfg.get('duration_s')} s measured, {cfg.get('per_sender_rate')} msg/s "
                     f"per user; gateway overrides: {report.get('gateway_overrides') or 'none'}"
                     f"; settings: {report.get('settings') or 'defaults'}")
        lines.append(f"sent {lg.get('sent')}  acked {lg.get('acked')}  failed "
                     f"{lg.get('failed')}  unanswered {lg.get('unanswered')}  "
                     f"(drain {lg.get('drain_s')} s)")
        lines.append(f"throughput {lg.get('throughput_msgs_per_s')} msg/s acked, "
                     f"{lg.get('deliveries_per_s')} deliveries/s to other participants")
        lines.append(f"latency   {_ms(lg.get('latency_ms', {}))}")
        lines.append(f"send lag  {_ms(lg.get('send_lag_ms', {}))}  (generator behind schedule)")
        lines.append(f"delivered {lg.get('delivered')}  missing {lg.get('missing')} "
                     f"(to others {lg.get('missing_to_others')}, echo {lg.get('missing_echo')})  "
                     f"duplicates {lg.get('duplicates')}  out of order {lg.get('out_of_order')} "
                     f"(gaps {lg.get('seq_gaps')}, regressions {lg.get('seq_regressions')})")
    if lg.get("unexpected_notifications"):
        lines.append(f"notification frames to joined connections (SPEC: new_message only): "
                     f"{lg['unexpected_notifications']}")
    lines.append(f"errors    {lg.get('errors_by_code') or 'none'}")
    for sample in (lg.get("error_samples") or [])[:3]:
        lines.append(f"          e.g. {sample}")
    mem = report.get("memory") or {}
    if mem:
        lines.append(f"gateway memory: {mem['gateway_rss_before_connections_kb'] / 1024:.1f} MiB "
                     f"before connections, {mem['gateway_rss_connections_idle_kb'] / 1024:.1f} "
                     f"MiB with {mem['connections']} idle -> {mem['kb_per_idle_connection']} "
                     f"KiB per idle connection; peak {mem['gateway_peak_rss_kb'] / 1024:.1f} MiB")
    for label, key in (("CPU in the window", "cpu_window"), ("CPU while connecting",
                                                             "cpu_connect")):
        cpu = report.get(key) or {}
        if cpu:
            each = "  ".join(f"{key[:-4]} {value}%" for key, value in cpu.items()
                             if key.endswith("_pct"))
            lines.append(f"{label} ({cpu['wall_s']} s, {cpu['cores']} cores; 100% = one core): "
                         f"{each}; machine busy {cpu.get('machine_busy_pct_of_all_cores')}% "
                         f"of all cores")
    for name, counters in (report.get("metrics_window") or {}).items():
        if counters.get("no_answer_at"):
            lines.append(f"{name} counters: /metrics did not answer within 10 s at the window's "
                         f"{' and '.join(counters['no_answer_at'])}")
        elif counters:
            rates = ", ".join(f"{_short(k)} {v}/s" for k, v in counters.get("per_s", {}).items())
            lines.append(f"{name} counters in the window: {rates or 'none'}")
            for key, label in (("mean_batch", "mean batch"),
                               ("mean_handler_ms", "mean handler ms"),
                               ("mean_rpc_ms", "mean rpc ms")):
                if counters.get(key):
                    lines.append(f"    {label} " + ", ".join(
                        f"{_short(k)} {v}" for k, v in counters[key].items()))
    for name, prof in (report.get("profiles") or {}).items():
        lines.append(f"profile {name}: {prof.get('samples')} samples; top self:")
        for row in (prof.get("self") or [])[:10]:
            lines.append(f"    {row['pct']:5.1f}%  {row['function']}")
        lines.append(f"  {name}: project functions, inclusive:")
        for row in (prof.get("project_inclusive") or [])[:10]:
            lines.append(f"    {row['pct']:5.1f}%  {row['function']}")
    for name, found in (report.get("service_logs") or {}).items():
        if found["lines"]:
            lines.append(f"{name} log: {found['lines']} warning/error lines ({found['log']}); "
                         f"last: {found['last'][-1][:300]}")
    lines.append(f"machine busy before the run: {report.get('machine_busy_before_pct')}% of all "
                 f"cores; exit codes {report.get('exit_codes')}")
    if report.get("backing_restarted"):
        lines.append(f"WARNING: restarted during the run (not by the bench): "
                     f"{report['backing_restarted']}; the numbers are not valid")
    lines.append("RESULT: " + ("ok" if report.get("ok") else "FAILED"))
    return "\n".join(lines)
