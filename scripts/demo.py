"""`make demo`: the whole flow on a small synthetic unilm checkpoint, offline.

It lists the official variants, serves the checkpoint from a web server on 127.0.0.1 (started here),
then inspects and converts it by URL (downloaded once into a cache under demo/), verifies the result
against the original architecture, and shows what `push` would publish (`--dry-run`: nothing is sent).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from beit_tools.core.arch import Family
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic

DEMO = Path("demo")
# The demo's own cache, and a local server: nothing here reaches beyond this machine.
ENV = {**os.environ, "BEIT_TOOLS_CACHE": str(DEMO / "cache"), "HF_HUB_OFFLINE": "0"}


def run(*args: object) -> None:
    command = [str(Path(sys.executable).with_name("beit-tools")), *map(str, args)]
    print(f"\n$ beit-tools {' '.join(map(str, args))}", flush=True)
    subprocess.run(command, check=True, env=ENV)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    arch = tiny_arch(Family.CLASSIFICATION, num_labels=1000, hidden_size=64, intermediate_size=256)
    source = write_synthetic(
        DEMO / "www" / "beit_demo_patch8_32_ft1k.pth", default_spec(arch).with_(training_extras=True)
    )
    print(f"built a synthetic unilm training checkpoint: {source}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(DEMO / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{source.name}"
    print(f"serving it at {url}")
    try:
        run("variants")
        run("inspect", url)
        run("convert", url, "-o", DEMO / "out")
    finally:
        server.shutdown()
    cached = next((DEMO / "cache").rglob(source.name))
    run("verify", DEMO / "out", "--against", cached, "--save-visual", DEMO / "predictions.png")
    print(f"\nfolder: {sorted(p.name for p in (DEMO / 'out').iterdir())}")
    run("push", DEMO / "out", "--repo", "my-org/beit-demo-ft1k", "--dry-run")


if __name__ == "__main__":
    main()
