"""A plan's `accelerate_config`: `unlearnkit run` starts itself under a launcher (docs/scale.md).

`accelerate launch --config_file CFG -m unlearnkit run PLAN` is what a user would type; the plan
key does it for them. One exception, decided here: accelerate 1.15 starts a CPU config
(`use_cpu: true`) with several processes through mpirun only, and otherwise runs one process;
such a config is started with `torch.distributed.run --nproc_per_node N` instead, which forms
the same gloo group. A CPU config with `distributed_type: FSDP` is the exception to the
exception: accelerate starts its processes itself and passes its FSDP settings on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from unlearnkit.errors import UnlearnkitError

LAUNCHED_ENV = "UNLEARNKIT_LAUNCHED"  # set in the launched processes: they never launch again


def already_launched() -> bool:
    return bool(os.environ.get(LAUNCHED_ENV)) or int(os.environ.get("WORLD_SIZE", "1")) > 1


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnlearnkitError(f"accelerate_config: no such file: {path}") from None
    except yaml.YAMLError as exc:
        raise UnlearnkitError(f"accelerate_config {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict):
        raise UnlearnkitError(f"accelerate_config {path}: expected a mapping of accelerate settings (see configs/accelerate/)")
    return config


def launch_command_line(config_path: Path, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command that runs `unlearnkit ARGS` under the config, and its environment."""
    config = read_config(config_path)
    processes = config.get("num_processes", 1)
    if not isinstance(processes, int) or processes < 1:
        raise UnlearnkitError(f"accelerate_config {config_path}: num_processes must be a positive integer, not {processes!r}")
    env = {**os.environ, LAUNCHED_ENV: "1"}
    if config.get("use_cpu") and processes > 1 and config.get("distributed_type") != "FSDP":
        env["ACCELERATE_USE_CPU"] = "true"
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "unlearnkit", *args], env
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path), "-m", "unlearnkit", *args], env


def relaunch(config_path: Path, args: list[str]) -> int:
    """Run `unlearnkit ARGS` under the launcher; its exit code."""
    command, env = launch_command_line(config_path, args)
    return subprocess.call(command, env=env)
