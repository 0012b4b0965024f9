"""The chaos soak's seeded fault schedule."""

import itertools

from bench.chaos import schedule


def test_same_seed_same_schedule_other_seed_other_schedule():
    assert schedule.plan(7, 1800, 4.4) == schedule.plan(7, 1800, 4.4)
    assert schedule.plan(7, 1800, 4.4) != schedule.plan(8, 1800, 4.4)


def test_one_or_two_faults_at_a_time_and_never_two_bridge_wide_ones():
    for seed in range(20):
        plan = schedule.plan(seed, 1800, 4.4)
        assert len(plan) > 50, seed
        assert {p.kind for p in plan} == set(schedule.KINDS)
        # sweep: +1 at a start, -1 at an end (ends first at the same instant)
        edges = sorted([(p.at, 1) for p in plan] + [(p.at + p.duration, -1) for p in plan],
                       key=lambda e: (e[0], e[1]))
        active = 0
        for _, step in edges:
            active += step
            assert active <= 2, seed
        for a, b in itertools.pairwise(sorted(plan, key=lambda p: p.at)):
            if _overlap(a, b):
                assert not schedule.exclusive(a.kind, b.kind)


def test_schedule_fits_the_run_and_leaves_time_to_recover_between_episodes():
    plan = sorted(schedule.plan(3, 600, 4.4, warmup=10, tail=10), key=lambda p: p.at)
    assert plan[0].at >= 10
    assert max(p.at + p.duration for p in plan) <= 590
    episode_end = plan[0].at + plan[0].duration
    gaps = 0
    for p in plan[1:]:
        if p.at <= episode_end:  # the second fault of an episode starts while the first is on
            episode_end = max(episode_end, p.at + p.duration)
            continue
        assert p.at - episode_end >= 4.4 + 1.0
        gaps += 1
        episode_end = p.at + p.duration
    assert gaps > 10


def _overlap(a, b) -> bool:
    return a.at < b.at + b.duration and b.at < a.at + a.duration


KUBE = {**schedule.KINDS, **schedule.API_KINDS}


def test_kubernetes_schedule_adds_apiserver_faults_never_two_at_once():
    # the plain schedule is unchanged by the apiserver kinds (the CI seed replays)
    assert {p.kind for p in schedule.plan(15, 1800, 4.4)} == set(schedule.KINDS)
    seen: set[str] = set()
    for seed in range(20):
        plan = sorted(schedule.plan(seed, 1800, 13.4, kinds=KUBE), key=lambda p: p.at)
        seen |= {p.kind for p in plan}
        for a, b in itertools.pairwise(plan):
            if _overlap(a, b):
                assert not (a.kind in schedule.API_KINDS and b.kind in schedule.API_KINDS)
    assert seen == set(KUBE)
    assert schedule.exclusive("apistop", "apikill") and not schedule.exclusive("apikill", "loss")


def test_an_apiserver_restart_gets_its_slack_before_the_next_episode():
    plan = sorted(schedule.plan(5, 3600, 13.4, kinds=KUBE), key=lambda p: p.at)
    kills = [p for p in plan if p.kind == "apikill"]
    assert kills
    for k in kills:
        later = [p for p in plan if p.at > k.at + k.duration]
        if later:
            slack = schedule.RESTART_SLACK_S["apikill"]
            assert later[0].at - (k.at + k.duration) >= slack + 13.4 + 1.0
