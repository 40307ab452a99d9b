"""`make bench`: wall time and peak memory of whole processes on a BEiT-large-sized checkpoint, as ratios.

The synthetic checkpoints (24 layers, hidden 1024, 1000 classes, fp32: 1.2 GB; and a 48-layer one twice
that size) are generated once under build/bench/. Every figure is one process, timed from start to exit,
its peak RSS read from the kernel (wait4). The baseline is the seed conversion's way, run here in the same
invocation: torch.load of the whole file, the renames and qkv split in memory, a randomly initialised
transformers model, save_pretrained. Medians of 3 runs where a run is cheap.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "build" / "bench"
EXE = str(Path(sys.executable).with_name("beit-tools"))
HF = str(Path(sys.executable).with_name("hf"))
# Made in a child process: this one stays small, so the processes it starts do not inherit its memory
# (a forked child's peak RSS counts what it had before exec).
GENERATE = """
import sys
from beit_tools.core.arch import Arch, Family
from beit_tools.synthetic import default_spec, write_synthetic
arch = Arch(Family.CLASSIFICATION, hidden_size=1024, num_hidden_layers=int(sys.argv[2]), num_attention_heads=16,
            intermediate_size=4096, use_relative_position_bias=True, num_labels=1000)
write_synthetic(sys.argv[1], default_spec(arch))
"""

# The seed's way, adapted only where transformers 5 forces it (names are handed to save_pretrained).
SEED_WAY = """
import sys, torch, transformers
from beit_tools.core.analysis import analyse
from beit_tools.core.schema import beit_config
source, out = sys.argv[1], sys.argv[2]
plan = analyse(source).plan                      # names and shapes only, to know the renames
state = torch.load(source, map_location="cpu", weights_only=False)["model"]   # everything into memory
converted = {}
for m in plan.mappings:
    if m.op is not None and m.op.writes:
        for key, tensor in zip(m.targets, m.op.produce(state[m.key], len(m.targets))):
            converted[key] = tensor.clone()
model = transformers.BeitForImageClassification(beit_config(plan.arch))   # random initialisation
model.save_pretrained(out, state_dict=converted)
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float


def run(command: list[str], env: dict[str, str] | None = None) -> Run:
    """One whole process: wall time and the peak RSS the kernel reports for it."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return Run(seconds, usage.ru_maxrss / 1024)


def median(runs: list[Run]) -> Run:
    return Run(statistics.median(r.seconds for r in runs), statistics.median(r.peak_mib for r in runs))


def checkpoint(name: str, layers: int) -> Path:
    path = BENCH / name
    if not path.exists():
        print(f"generating {path} (once) ...", flush=True)
        BENCH.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", GENERATE, str(path), str(layers)], check=True)
    return path


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def main() -> None:
    large, double = checkpoint("beit_large_synthetic.pth", 24), checkpoint("beit_large48_synthetic.pth", 48)
    env = {**os.environ, "BEIT_TOOLS_CACHE": str(BENCH / "cache"), "HF_HUB_OFFLINE": "1"}
    for path in (large, double):  # both readings start from the page cache
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    out = BENCH / "out"
    python = [sys.executable, "-c"]

    seed = run([*python, SEED_WAY, str(large), str(fresh(BENCH / "seed-out"))], env)
    shutil.rmtree(BENCH / "cache", ignore_errors=True)
    cold = run([EXE, "convert", str(large), "-o", str(fresh(out))], env)
    warm = median([run([EXE, "convert", str(large), "-o", str(fresh(out))], env) for _ in range(3)])
    twice_cold = run([EXE, "convert", str(double), "-o", str(fresh(BENCH / "out48"))], env)
    twice = median([run([EXE, "convert", str(double), "-o", str(fresh(BENCH / "out48"))], env) for _ in range(3)])
    inspect = median([run([EXE, "inspect", str(large), "--json"], env) for _ in range(3)])
    verify = run([EXE, "verify", str(out)], env)
    against = run([EXE, "verify", str(out), "--against", str(large)], env)
    helps = median([run([EXE, "--help"], env) for _ in range(3)])
    hf_help = median([run([HF, "--help"], env) for _ in range(3)])
    torch_only = median([run([*python, "import torch"], env) for _ in range(3)])

    def ratio(a: Run, b: Run, field: str) -> float:
        return getattr(a, field) / getattr(b, field)

    def within(wall: float | None = None, rss: float | None = None, base: Run = seed) -> Callable[[Run], bool]:
        """A target: wall time and peak RSS at most these multiples of `base`'s."""
        return lambda r: (
            (wall is None or ratio(r, base, "seconds") <= wall) and (rss is None or ratio(r, base, "peak_mib") <= rss)
        )

    # (what, its run, the run its ratios are against, the target as said, the target as checked)
    rows: list[tuple[str, Run, Run, str, Callable[[Run], bool] | None]] = [
        ("the seed's way (baseline)", seed, seed, "", None),
        ("convert, first run (cold caches)", cold, seed, "wall ≤ 0.35×, RSS ≤ 0.35×", within(0.35, 0.35)),
        ("convert (median of 3)", warm, seed, "wall ≤ 0.35×, RSS ≤ 0.35×", within(0.35, 0.35)),
        (
            "convert, 48 layers, first run",
            twice_cold,
            seed,
            "RSS < 1.05× the 24-layer first run",
            within(rss=1.05, base=cold),
        ),
        ("convert, 48 layers (median of 3)", twice, seed, "RSS < 1.05× the 24-layer run", within(rss=1.05, base=warm)),
        ("inspect (median of 3)", inspect, seed, "wall ≤ 0.2×", within(0.2)),
        ("verify out/", verify, seed, "wall ≤ 0.5×, RSS ≤ 0.75×", within(0.5, 0.75)),
        ("verify out/ --against SRC", against, seed, "RSS ≤ 1.1×", within(rss=1.1)),
        ("beit-tools --help (median of 3)", helps, hf_help, "wall ≤ 0.5× hf --help", within(0.5, base=hf_help)),
        ("hf --help (median of 3)", hf_help, hf_help, "", None),
        ("python -c 'import torch' (floor)", torch_only, seed, "", None),
    ]
    size, size48 = large.stat().st_size / 2**20, double.stat().st_size / 2**20
    print(f"\nBEiT-large-sized synthetic checkpoint: {size:.0f} MiB fp32 (48 layers: {size48:.0f} MiB)")
    print(f"{'what':36} {'wall':>8} {'ratio':>7} {'peak RSS':>10} {'ratio':>7}  target")
    for name, r, base, target, meets in rows:
        met = "" if meets is None else "met" if meets(r) else "NOT met"
        print(
            f"{name:36} {r.seconds:7.2f}s {ratio(r, base, 'seconds'):6.2f}× {r.peak_mib:8.0f}MiB "
            f"{ratio(r, base, 'peak_mib'):6.2f}×  {target} {met}".rstrip()
        )


if __name__ == "__main__":
    main()
