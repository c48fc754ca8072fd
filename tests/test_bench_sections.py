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
