"""`make demo`: inspect -> convert -> verify on a small synthetic unilm checkpoint, offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from beit_tools.core.arch import Family
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic

DEMO = Path("demo")


def run(*args: object) -> None:
    command = [str(Path(sys.executable).with_name("beit-tools")), *map(str, args)]
    print(f"\n$ beit-tools {' '.join(map(str, args))}", flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    arch = tiny_arch(Family.CLASSIFICATION, num_labels=1000, hidden_size=64, intermediate_size=256)
    source = write_synthetic(DEMO / "beit_demo_patch8_32_ft1k.pth", default_spec(arch).with_(training_extras=True))
    print(f"built a synthetic unilm training checkpoint: {source}")
    run("inspect", source)
    run("convert", source, "-o", DEMO / "out")
    run("verify", DEMO / "out", "--against", source, "--save-visual", DEMO / "predictions.png")
    print(f"\nfolder: {sorted(p.name for p in (DEMO / 'out').iterdir())}")


if __name__ == "__main__":
    main()
