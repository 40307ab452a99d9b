"""`make bench`: convert a BEiT-large-sized synthetic checkpoint and report wall time and peak memory.

Each conversion runs in a fresh process so its peak RSS is its own. The source is memory-mapped and
tensors are streamed, so peak memory should stay near one large tensor above the interpreter's baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from beit_tools.core.arch import Arch, Family
from beit_tools.synthetic import default_spec, write_synthetic

LARGE = Arch(
    Family.CLASSIFICATION,
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    use_relative_position_bias=True,
    num_labels=1000,
)

CHILD = """
import json, resource, sys, time
from pathlib import Path
from beit_tools.core.convert import ConvertOptions, convert
start = time.perf_counter()
convert(ConvertOptions(Path(sys.argv[1]), Path(sys.argv[2])))
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = write_synthetic(Path(tmp) / "beit_large_synthetic.pth", default_spec(LARGE))
        size_mb = source.stat().st_size / 2**20
        baseline = subprocess.run(
            [
                sys.executable,
                "-c",
                "import resource, transformers, torch; "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(source), str(Path(tmp) / "out")],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        inspect_s = _wall([str(Path(sys.executable).with_name("beit-tools")), "inspect", str(source), "--json"])
        torch_s = _wall([sys.executable, "-c", "import torch"])
        print(f"source: {size_mb:.0f} MB (BEiT-large layout, fp32)")
        print(f"convert: {result['seconds']:.1f} s in-process, {time.perf_counter() - started:.1f} s with start-up")
        print(
            f"peak RSS: {result['peak_rss_mb']:.0f} MB (interpreter with torch+transformers: "
            f"{float(baseline.stdout):.0f} MB)"
        )
        print(f"inspect: {inspect_s:.1f} s (python -c 'import torch': {torch_s:.1f} s)")


if __name__ == "__main__":
    main()
