"""Where the workers' metric files live: in memory by default, never where a full data disk can SIGBUS them."""

import os
from pathlib import Path

import pytest

from feedproxy.http import metricsfolder
from feedproxy.http.metricsfolder import metrics_root


@pytest.fixture(autouse=True)
def no_operator_choice(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)


def filesystem_type(path: str) -> str:
    """The type of the mount holding path, from /proc/mounts (the longest mount point that contains it)."""
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    containing = [(point, kind) for point, kind in mounts if path == point or path.startswith(point.rstrip("/") + "/")]
    return max(containing, key=lambda mount: len(mount[0]))[1]


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this system")
def test_by_default_metrics_live_in_memory_not_in_the_data_folder(tmp_path):
    root = metrics_root(str(tmp_path / "data"))
    assert not root.startswith(str(tmp_path))
    assert filesystem_type(os.path.dirname(root)) == "tmpfs"  # a full data disk cannot SIGBUS the workers
    assert os.path.dirname(root) == f"/dev/shm/feedproxy-{os.getuid()}"


def test_each_data_folder_has_its_own_metrics_root_and_instances_on_one_share_it(tmp_path):
    assert metrics_root(str(tmp_path / "a")) == metrics_root(str(tmp_path / "b" / ".." / "a"))
    assert metrics_root(str(tmp_path / "a")) != metrics_root(str(tmp_path / "b"))


def test_the_users_runtime_folder_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    assert os.path.dirname(metrics_root(str(tmp_path / "data"))) == str(tmp_path / "run" / "feedproxy")


def test_the_operators_folder_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mine"))
    assert metrics_root(str(tmp_path / "data")) == str(tmp_path / "mine")


def test_a_shared_memory_folder_others_can_write_is_not_used(tmp_path, monkeypatch):
    """/dev/shm is everyone's: a feedproxy-<uid> folder made writable by others (squatted) is refused."""
    monkeypatch.setattr(metricsfolder, "SHARED_MEMORY", str(tmp_path / "shm"))
    squatted = tmp_path / "shm" / f"feedproxy-{os.getuid()}"
    squatted.mkdir(parents=True)
    squatted.chmod(0o777)
    assert metrics_root(str(tmp_path / "data")) == str(tmp_path / "data" / "metrics")


def test_without_memory_folders_metrics_go_to_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(metricsfolder, "SHARED_MEMORY", str(tmp_path / "no-shm"))
    assert metrics_root(str(tmp_path / "data")) == str(tmp_path / "data" / "metrics")
