"""The runtime never imports torch or timm (it runs on clinic boxes without them)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "timm", "torchvision")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('LOADED:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    marker = [line for line in done.stdout.splitlines() if line.startswith("LOADED:")]
    assert len(marker) == 1, done.stdout
    return set(marker[0].removeprefix("LOADED:").split())


def test_import_leaves_torch_out() -> None:
    assert _loaded_after("import svdh_runtime, svdh_runtime.cli, svdh_runtime.scoring, svdh_runtime.overlay") == set()


def test_help_leaves_torch_out() -> None:
    code = (
        "import sys\nsys.argv = ['svdh-run', '--help']\nfrom svdh_runtime.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
    )
    assert _loaded_after(code) == set()


def test_runtime_sources_do_not_mention_the_upper_layers() -> None:
    from pathlib import Path

    import svdh_runtime

    root = Path(svdh_runtime.__file__).parent
    for source in root.rglob("*.py"):
        text = source.read_text()
        for name in ("import torch", "import timm", "svdh_exporter", "svdh_trainer"):
            assert name not in text, f"{source.name} mentions {name}"


def test_a_scoring_run_leaves_pydicom_s_downloader_out_until_it_is_used() -> None:
    """pydicom's test-file downloader (urllib, ssl, tqdm, requests) costs cold start and is never needed to
    score; it still works when called. numpy.ma (which np.percentile imports) stays out too."""
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "samples" / "sample.dcm"
    probe = (
        "import sys\n"
        f"sys.argv = ['svdh-run', {str(sample)!r}, '--json']\n"
        "from svdh_runtime.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('ssl', 'tqdm', 'requests', 'urllib.request', 'numpy.ma') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from pydicom.data import get_testdata_file\n"
        "assert get_testdata_file('CT_small.dcm', download=False).endswith('CT_small.dcm')\n"
        "import pydicom.data\n"
        "assert pydicom.data.download.NoHashFound.__name__ == 'NoHashFound'\n"
        "assert 'requests' not in sys.modules\n"
        "print('PROBE OK')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PROBE OK" in done.stdout, done.stderr
