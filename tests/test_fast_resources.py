"""Memory checks: the cgroup (container) limit caps what the CPU is said to have."""

from qtrain import resources


def test_a_cgroup_limit_caps_available_memory(tmp_path):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("1073741824\n")
    usage.write_text("268435456\n")
    assert resources._cgroup_free_bytes(((str(limit), str(usage)),)) == 768 * 2**20


def test_an_unlimited_or_missing_cgroup_is_ignored(tmp_path):
    limit = tmp_path / "memory.max"
    limit.write_text("max\n")
    assert resources._cgroup_free_bytes(((str(limit), str(tmp_path / "none")),)) is None
    assert resources._cgroup_free_bytes(((str(tmp_path / "a"), str(tmp_path / "b")),)) is None
    assert resources.available_bytes("cpu") > 0
