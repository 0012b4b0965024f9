"""Prometheus exposition of the runtime's counters, read at scrape time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from vip_sidecar.stats import Histogram
from vip_sidecar.status_view import provider_details

if TYPE_CHECKING:
    from vip_sidecar.instance import VipInstance
    from vip_sidecar.runtime import Runtime

STATE_VALUES = {"INIT": 0, "BACKUP": 1, "MASTER": 2}


def _hist(fam: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    fam.add_metric(labels, h.cumulative(), sum_value=h.total)


class RuntimeCollector:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        vl = ["vip", "vhid", "interface"]
        state = GaugeMetricFamily(
            "vip_sidecar_state", "CARP state per VIP: 0 init, 1 backup, 2 master", labels=vl
        )
        is_master = GaugeMetricFamily(
            "vip_sidecar_is_master", "1 if this node is MASTER", labels=vl
        )
        advskew = GaugeMetricFamily(
            "vip_sidecar_advskew", "Effective advskew (configured + demotion)", labels=vl
        )
        demotion = GaugeMetricFamily("vip_sidecar_demotion", "Current demotion", labels=vl)
        sent = CounterMetricFamily("vip_sidecar_adverts_sent", "Adverts sent", labels=["vip"])
        recv = CounterMetricFamily(
            "vip_sidecar_adverts_received", "Valid adverts received", labels=["vip"]
        )
        send_err = CounterMetricFamily(
            "vip_sidecar_send_errors", "Failed advert writes", labels=["vip"]
        )
        drops = CounterMetricFamily(
            "vip_sidecar_packets_dropped",
            "Received packets dropped, by reason",
            labels=["interface", "vip", "reason"],
        )
        trans = CounterMetricFamily(
            "vip_sidecar_transitions",
            "State transitions by reason",
            labels=["vip", "from_state", "to_state", "reason"],
        )
        vetoes = CounterMetricFamily(
            "vip_sidecar_promotion_vetoes", "Promotions refused by a provider", labels=["vip"]
        )
        repairs = CounterMetricFamily(
            "vip_sidecar_provider_repairs",
            "Drift repaired by a provider check while master",
            labels=["vip", "provider"],
        )
        pfail = CounterMetricFamily(
            "vip_sidecar_provider_failures",
            "Provider action failures",
            labels=["vip", "provider", "action"],
        )
        pdur = HistogramMetricFamily(
            "vip_sidecar_provider_action_duration_seconds",
            "Provider action duration",
            labels=["vip", "provider", "action"],
        )
        phase = HistogramMetricFamily(
            "vip_sidecar_failover_phase_seconds",
            "Time from detection to each failover phase (elected, provider:<name>, complete)",
            labels=["vip", "phase"],
        )
        pvalue = GaugeMetricFamily(
            "vip_sidecar_provider_value",
            "Numeric facts a provider reports (retries, drifts, epoch)",
            labels=["vip", "provider", "key"],
        )
        late = HistogramMetricFamily(
            "vip_sidecar_advert_lateness_seconds",
            "How late adverts left compared with their schedule",
            labels=["vip"],
        )
        # for alert rules: "no master for longer than the dead interval" needs both
        dead = GaugeMetricFamily(
            "vip_sidecar_dead_interval_seconds",
            "Silence after which a BACKUP claims the VIP (advbase * deadratio + skew)",
            labels=vl,
        )
        master_seen = GaugeMetricFamily(
            "vip_sidecar_master_seen_timestamp_seconds",
            "Unix time this node last knew of a master (now if it is MASTER)",
            labels=vl,
        )
        # the family and address are labels of their own series, not of every metric:
        # adding labels to the existing series would break every query written for them
        info = GaugeMetricFamily(
            "vip_sidecar_vip_info",
            "1 per VIP; labels say its address family (ipv4, ipv6) and address",
            labels=[*vl, "family", "addr"],
        )
        healthy = GaugeMetricFamily(
            "vip_sidecar_healthy", "1 while /healthz holds (loop alive, adverts on time)"
        )
        healthy.add_metric([], 1 if rt.healthy()[0] else 0)
        now = time.time()
        for inst in rt.instances:
            name, st = inst.cfg.name, inst.stats
            lv = [name, str(inst.cfg.vhid), inst.cfg.interface]
            info.add_metric([*lv, inst.cfg.family, str(inst.cfg.addr)], 1)
            state.add_metric(lv, STATE_VALUES[inst.election.state.name])
            is_master.add_metric(lv, 1 if inst.election.state.name == "MASTER" else 0)
            advskew.add_metric(lv, inst.election.advskew)
            demotion.add_metric(lv, inst.election.demotion)
            dead.add_metric(lv, inst.election.dead_interval_s())
            master_seen.add_metric(lv, _master_seen(inst, now, rt.started_at))
            sent.add_metric([name], st.adverts_sent)
            recv.add_metric([name], st.adverts_received)
            send_err.add_metric([name], st.send_errors)
            for reason, n in st.drops.items():
                drops.add_metric([inst.cfg.interface, name, reason], n)
            for (a, b, r), n in st.transitions.items():
                trans.add_metric([name, a, b, r], n)
            vetoes.add_metric([name], st.vetoes)
            for prov, n in st.repairs.items():
                repairs.add_metric([name, prov], n)
            for (prov, action), n in st.provider_failures.items():
                pfail.add_metric([name, prov, action], n)
            for (prov, action), h in st.provider_durations.items():
                _hist(pdur, [name, prov, action], h)
            for ph, h in st.phases.items():
                _hist(phase, [name, ph], h)
            _hist(late, [name], st.advert_lateness)
            for p in inst.pipeline.providers:
                for key, value in provider_details(p).items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        pvalue.add_metric([name, p.name, key], value)
        for (iface, reason), n in rt.iface_drops.items():
            drops.add_metric([iface, "", reason], n)
        yield from (
            state,
            is_master,
            advskew,
            demotion,
            sent,
            recv,
            send_err,
            drops,
            trans,
            vetoes,
            repairs,
            pfail,
            pdur,
            phase,
            late,
            pvalue,
            dead,
            master_seen,
            info,
            healthy,
        )


def _master_seen(inst: VipInstance, now: float, started_at: float) -> float:
    if inst.election.state.name == "MASTER":
        return now
    if inst.master_seen is not None:
        return inst.master_seen.at
    return started_at  # never heard one: count the silence from start-up


def render(runtime: Runtime) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return generate_latest(registry)
