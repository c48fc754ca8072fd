"""The benchmark registry: every section can be run by ``bench.run_all`` (the module it lives in, its
steps writing under the results folder) and renders nothing when its results are absent."""

from bench.sections import EXPERIMENTS, Results, run_order, sections


def test_every_section_runs_its_own_module_into_the_results_folder(tmp_path):
    secs = sections()
    assert [s.module for s in secs] == [f"bench.experiments.{name}" for name in EXPERIMENTS]
    steps = run_order(secs)
    assert len({step.name for _, step in steps}) == len(steps)
    for _, step in steps:
        for args in (step.full, step.quick):
            assert args is None or any("{out}/" in x for x in args), step.name
    empty = Results(tmp_path)
    assert all(s.render(empty) == [] and (s.claims is None or s.claims(empty) == []) for s in secs
               if s.name != "gpu")  # gpu reads the full run's result wherever the report goes


def test_the_quick_run_schedule_keeps_each_sections_order_and_one_network_step_at_a_time():
    from bench.run_all import Schedule
    from bench.sections import Section, Step

    def section(name, *steps, after=()):
        return Section(name, f"bench.experiments.{name}", lambda r: [], steps=steps, after=after)

    a = section("a", Step("a1", None, ("{out}/a1",)), Step("a2", None, ("{out}/a2",)))
    b = section("b", Step("b1", None, ("{out}/b1",)), after=("a",))
    n = section("n", Step("n1", None, ("{out}/n1",), needs_root=True), Step("n2", None, ("{out}/n2",), needs_root=True))
    m = section("m", Step("m1", None, ("{out}/m1",), needs_root=True))
    planned = [(s, step) for s in (a, b, n, m) for step in s.steps]
    sched = Schedule(planned, {"b1": 100, "m1": 60, "n2": 50, "n1": 40, "a2": 30, "a1": 1})
    names = lambda: (sched.take() or (None, Step("none", None, None)))[1]  # noqa: E731
    first, second = names(), names()
    assert (first.name, second.name) == ("m1", "a1")  # b1 waits for a; a second network step waits for m1
    sched.finish(second)
    a2 = names()
    assert a2.name == "a2"  # b1 still waits for it
    sched.finish(first)
    third = names()
    assert third.name == "n1"  # n2 comes after n1, its section's earlier step
    sched.finish(third)
    sched.finish(a2)
    for expected in ("b1", "n2"):
        sched.finish(got := names())
        assert got.name == expected
    assert sched.take() is None


def test_the_quick_run_starts_its_network_steps_first_and_the_full_run_keeps_run_order():
    from bench.run_all import Schedule
    from bench.sections import Section, Step

    cpu = Section("cpu", "bench.experiments.cpu", lambda r: [], steps=(Step("c1", ("{out}/c",), ("{out}/c",)),))
    net = Section("net", "bench.experiments.net", lambda r: [],
                  steps=(Step("n1", ("{out}/n",), ("{out}/n",), needs_root=True),))
    planned = [(cpu, cpu.steps[0]), (net, net.steps[0])]
    assert Schedule(planned, {"c1": 100, "n1": 10}, network_first=True).take()[1].name == "n1"
    assert Schedule(planned, {}).take()[1].name == "c1"
