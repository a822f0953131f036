"""A sweep on a two-node Ray cluster (``ray.cluster_utils.Cluster``) with a shared storage path."""
import pytest
import ray
from ray.cluster_utils import Cluster

from search.tune import run_sweep

from conftest import start_local_ray
from sweep_helpers import epochs_reported, study_trials, tiny_sweep, trial_dirs


@pytest.fixture(scope="module")
def two_nodes(ray_runtime):
    shared = ray.is_initialized()  # the local Ray other tests share makes way for the cluster
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if shared:
        start_local_ray()


def test_sweep_runs_across_both_nodes(two_nodes, tmp_path):
    import json
    spec = tiny_sweep(tmp_path, name="cluster", modes=["plain"], num_samples=4,
                      ray_address=two_nodes.address,
                      scheduler={"grace_period": 4, "reduction_factor": 2})
    result = run_sweep(spec)
    assert len(study_trials(result.run_dir, result.studies[0].study.key)) == 4
    nodes = set()
    for trial_dir in trial_dirs(result.run_dir):
        assert epochs_reported(trial_dir)[-1] == 4
        nodes |= {json.loads(line)["node"] for line in
                  (trial_dir / "result.json").read_text().splitlines()}
    assert len(nodes) == 2  # one CPU per node, two trials at a time: both nodes worked
