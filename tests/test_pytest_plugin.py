"""bidi-core's pytest plugin: its fixtures, its backend parametrization, and one registration whichever way
it is loaded (the entry point an install declares, ``pytest_plugins``, ``-p``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from adapters.testing import FakeAudioDevice, ScriptedModel, Step
from bidi_core import BidiAgent, BidiResponseCompleteEvent, BidiResponseStartEvent

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "adapters.testing.pytest_plugin"

# ---------------------------------------------------------------- the fixtures


@pytest.mark.script([Step(emit=[BidiResponseStartEvent("r1"), BidiResponseCompleteEvent("r1", "complete")])])
async def test_scripted_model_plays_the_script_of_the_marker(scripted_model: ScriptedModel) -> None:
    async with BidiAgent(model=scripted_model) as agent:
        with anyio.fail_after(5):
            async for event in agent.receive():
                if isinstance(event, BidiResponseCompleteEvent):
                    break
    scripted_model.assert_done()


async def test_unmarked_scripted_model_is_open_ended(scripted_model: ScriptedModel) -> None:
    async with BidiAgent(model=scripted_model):
        with anyio.fail_after(5):
            while scripted_model.session is None:
                await scripted_model.wait_for_activity()
        scripted_model.push(BidiResponseStartEvent("r1"))


@pytest.mark.fake_audio(inputs=("Desk Microphone",), outputs=("Desk Speaker",))
def test_fake_audio_device_takes_the_marker(fake_audio_device: FakeAudioDevice) -> None:
    assert [d.name for d in fake_audio_device.devices()] == ["Desk Microphone", "Desk Speaker"]


def test_anyio_backend_is_the_plugins(request: pytest.FixtureRequest, anyio_backend: str) -> None:
    assert anyio_backend in ("asyncio", "trio")
    assert request.config.pluginmanager.has_plugin("adapters.testing._pytest_backends")


# ---------------------------------------------------------------- loading and registration

INNER_TEST = """
import pytest

@pytest.mark.anyio
async def test_runs(anyio_backend):
    pass

def test_registered_once(request):
    import adapters.testing.pytest_plugin as plugin
    plugins = request.config.pluginmanager.get_plugins()
    assert sum(p is plugin for p in plugins) == 1
"""


def installed(tmp_path: Path, entry_point: str) -> dict[str, str]:
    """An environment in which bidi-core looks installed with a ``pytest11`` entry point named ``entry_point``."""
    site = tmp_path / "site"
    dist = site / "bidi_core-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bidi-core\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{entry_point} = {PLUGIN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return env


def run_pytest(tmp_path: Path, env: dict[str, str], *args: str, conftest: str = "") -> subprocess.CompletedProcess[str]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(conftest)
    (project / "test_inner.py").write_text(INNER_TEST)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(project)]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_installed_and_in_pytest_plugins_it_is_registered_once(tmp_path: Path) -> None:
    env = installed(tmp_path, PLUGIN)
    done = run_pytest(tmp_path, env, conftest=f"pytest_plugins = [{PLUGIN!r}]\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout  # test_runs on asyncio and on Trio, and test_registered_once


def test_installed_and_given_with_p_it_is_registered_once_and_the_ini_option_picks_backends(tmp_path: Path) -> None:
    env = installed(tmp_path, PLUGIN)
    done = run_pytest(tmp_path, env, "-p", PLUGIN, "-o", "bidi_core_backends=asyncio")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 1 deselected" in done.stdout


def test_an_entry_point_of_another_name_would_be_registered_twice(tmp_path: Path) -> None:
    """Why the entry point is named after its module: pluggy refuses one module under two names."""
    env = installed(tmp_path, "bidi_core_testing")
    done = run_pytest(tmp_path, env, conftest=f"pytest_plugins = [{PLUGIN!r}]\n")
    assert done.returncode != 0
    assert "already registered" in done.stdout + done.stderr
