#!/usr/bin/env python3
"""Summarises bench/mqtt.sh results (JSON lines) as Markdown, with Moat/Mosquitto ratios."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by[(r.get("run"), r.get("label"))] = r


def get(run, label, *path):
    v = by.get((run, label))
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v


def f(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}×"


def cpu(run, label):
    c = get(run, label, "cpu") or {}
    w = c.get("wall_s") or 0
    b, g = c.get("broker_cpu_s"), c.get("generator_cpu_s")
    if not w or b is None:
        return "n/a"
    return f"{b / w:.2f} / {g / w:.2f}"


print("| figure | Moat | Mosquitto | Moat/Mosquitto | CPU cores used, broker / generator (Moat; Mosquitto) |")
print("|---|---|---|---|---|")
a, b = get("handshake", "moat", "handshakes_per_s"), get("handshake", "mosquitto", "handshakes_per_s")
print(f"| full mTLS handshakes + CONNACK /s | {f(a)} | {f(b)} | {ratio(a, b)} | {cpu('handshake', 'moat')}; {cpu('handshake', 'mosquitto')} |")
a, b = get("handshake-c4", "moat", "handshakes_per_s"), get("handshake-c4", "mosquitto", "handshakes_per_s")
print(f"| same, 4 handshakes in flight | {f(a)} | {f(b)} | {ratio(a, b)} | {cpu('handshake-c4', 'moat')}; {cpu('handshake-c4', 'mosquitto')} |")


def per_cpu(run, label):
    """Handshakes per CPU-second of the server."""
    r = by.get((run, label)) or {}
    c, n = r.get("cpu") or {}, r.get("handshakes_per_s")
    w, b = c.get("wall_s"), c.get("broker_cpu_s")
    return None if not (w and b and n) else n / (b / w)


for run, what in [("handshake", "64 in flight"), ("handshake-c4", "4 in flight")]:
    a, b = get(run, "moat", "handshakes_per_s"), get(run, "baseline", "handshakes_per_s")
    if a is None and b is None:
        continue
    pa, pb = per_cpu(run, "moat"), per_cpu(run, "baseline")
    print(f"| handshakes /s, Moat vs bare rustls mTLS server, {what} | {f(a)} | {f(b)} (bare) | {ratio(a, b)} | {cpu(run, 'moat')}; {cpu(run, 'baseline')} (bare) |")
    print(f"| handshakes per server CPU-second, Moat vs bare rustls, {what} | {f(pa)} | {f(pb)} (bare) | **{ratio(pa, pb)}** | goal ≥ 0.90× |")
for name, label in [
    ("handshake", "handshake+CONNACK latency p99 at 64 in flight (ms)"),
]:
    a, b = get(name, "moat", "latency", "p99_ms"), get(name, "mosquitto", "latency", "p99_ms")
    print(f"| {label} | {f(a, '{:.1f}')} | {f(b, '{:.1f}')} | | |")
for run in [
    "selfloop-max-q0", "selfloop-rate-q0", "selfloop-max-q1", "selfloop-rate-q1",
    "fanin-max-q0", "fanin-rate-q0", "fanin-max-q1", "fanin-rate-q1",
    "fanout-max-q0", "fanout-rate-q0", "fanout-max-q1", "fanout-rate-q1",
]:
    cells = []
    for label in ("moat", "mosquitto"):
        r = by.get((run, label))
        if r is None:
            cells.append(("not run", None))
        elif r.get("failed"):
            cells.append(("refused (ACL)" if label == "moat" and run.startswith("fan") else "failed", None))
        else:
            d = r.get("delivered_per_s")
            p99 = (r.get("latency") or {}).get("p99_ms")
            cells.append((f"{d:,.0f}/s, p99 {f(p99, '{:.2f}')} ms", d))
    print(f"| {run} delivered msgs/s | {cells[0][0]} | {cells[1][0]} | {ratio(cells[0][1], cells[1][1])} | {cpu(run, 'moat')}; {cpu(run, 'mosquitto')} |")
a, b = get("idle-memory", "moat", "bytes_per_connection"), get("idle-memory", "mosquitto", "bytes_per_connection")
print(f"| broker RSS per idle mTLS connection (slope {', '.join(str(s['connections']) for s in (get('idle-memory', 'moat', 'stages') or []))}) | {f(a and a / 1024, '{:.1f} KiB')} | {f(b and b / 1024, '{:.1f} KiB')} | {ratio(a, b)} | |")
a, b = get("handshake-with-revoked", "moat", "handshakes_per_s"), get("handshake-before-revoked", "moat", "handshakes_per_s")
delta = "n/a" if not a or not b else f"{(a / b - 1) * 100:+.1f} %"
rs = by.get(("restart-with-revoked", "moat")) or {}
print(f"| Moat handshakes/s with {f(rs.get('revoked'))} revoked serials vs none (same run) | {f(a)} vs {f(b)} | | {delta} | hub RSS 3 s after restart {f((rs.get('rss_bytes') or 0) / 1048576, '{:.0f}')} MiB |")
r = by.get(("revoke", "moat")) or {}
rq, rp = r.get("request_to_close") or {}, r.get("response_to_close") or {}
print(f"| Moat revocation → disconnect over {r.get('revocations', 'n/a')} revocations: request sent → close, p50 / p99 / max (ms) | {f(rq.get('p50_ms'), '{:.1f}')} / {f(rq.get('p99_ms'), '{:.1f}')} / {f(rq.get('max_ms'), '{:.1f}')} | n/a | | API response → close p99 {f(rp.get('p99_ms'), '{:.1f}')} ms; not closed: {len(r.get('not_closed') or [])}; reconnects accepted: {len(r.get('reconnects_accepted') or [])} |")
