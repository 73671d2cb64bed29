"""The PACS node's disk queue and its command line, without a network peer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from svdh_runtime.pacs.node import Destination
from svdh_runtime.pacs.spool import Spool, item_key


def test_item_keys_are_safe_file_names() -> None:
    assert item_key("1.2.840.113619.2.55.3") == "1.2.840.113619.2.55.3"
    hashed = item_key("../../etc/passwd")
    assert hashed.startswith("x") and "/" not in hashed and hashed == item_key("../../etc/passwd")
    assert item_key("1." + "2" * 80).startswith("x"), "longer than a UID may be"


def test_spool_keeps_every_item_through_its_states(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_queue=2)
    assert spool.put("1.1", b"first") and spool.put("1.2", b"second")
    assert not spool.put("1.1", b"again"), "a second copy of an instance is not queued"
    assert spool.refusal() == "queue full (2 images waiting)"
    assert spool.next_incoming() == "1.1" and spool.in_work() == ["1.1"]
    spool.write_result("1.1", {"delivered": {}})
    assert spool.counts().undelivered == 1 and spool.read_result("1.1") == {"delivered": {}}
    spool.finish("1.1")
    assert spool.state_of("1.1") == "done" and spool.path("done", "1.1").read_bytes() == b"first"
    assert spool.next_incoming() == "1.2"
    spool.fail("1.2", "blank image")
    assert spool.state_of("1.2") == "failed" and spool.path("failed", "1.2").read_bytes() == b"second"
    assert json.loads((tmp_path / "spool" / "failed" / "1.2.json").read_text()) == {"reason": "blank image"}
    assert spool.refusal() is None and spool.next_incoming() is None
    assert not list((tmp_path / "spool").rglob("*.partial"))


@pytest.mark.parametrize("text", ["pacs:104", "pacs:port:AET", ":104:AET", "pacs:70000:AET", "pacs:104:" + "A" * 17])
def test_bad_destinations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Destination.parse(text)


def test_destination_keeps_ipv6_hosts() -> None:
    assert Destination.parse("::1:11112:PACS") == Destination("::1", 11112, "PACS")


def test_serve_refuses_a_bad_forward_in_one_line(tmp_path: Path) -> None:
    done = run_cli("svdh-run", "serve", "--spool", str(tmp_path / "spool"), "--forward", "pacs:104")
    assert done.returncode == 2 and "HOST:PORT:AET" in done.stderr and "Traceback" not in done.stderr
