"""The PACS node's disk queue and its command line, without a network peer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_default_spool_is_the_per_user_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from svdh_runtime.pacs.spool import default_spool

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_spool() == tmp_path / "state" / "svdh" / "spool"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_spool() == tmp_path / "home" / ".local" / "state" / "svdh" / "spool"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_spool() == tmp_path / "home" / ".local" / "state" / "svdh" / "spool"


def test_status_without_spool_reads_the_per_user_folder_from_any_folder(tmp_path: Path) -> None:
    spool = tmp_path / "state" / "svdh" / "spool"
    spool.mkdir(parents=True)
    (spool / "status.json").write_text(json.dumps({"running": True, "heartbeat": 0}))
    code = "import sys; sys.argv[0] = 'svdh-run'; from svdh_runtime.cli import main; main()"

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-c", code, "status"], capture_output=True, text=True, env=env, cwd="/")
    assert done.returncode == 4 and json.loads(done.stdout)["spool"] == str(spool)
    assert f"the node of {spool} is not running" in done.stderr


def _scored_spool(root: Path, keys: list[str]) -> Spool:
    spool = Spool(root)
    for key in keys:
        spool.put(key, b"image")
        spool.next_incoming()
        spool.write_result(key, {"sop_instance_uid": key, "delivered": {"forward": True}})
        spool.finish(key)
    return spool


def test_resend_reopens_a_done_item_with_its_results_undelivered(tmp_path: Path) -> None:
    spool = _scored_spool(tmp_path / "spool", ["1.1", "1.2"])
    spool.request_resend("1.1")
    spool.request_resend("9.9")  # never received
    assert spool.resend_requests() == ["1.1", "9.9"]
    assert spool.reopen_for_resend("1.1") and spool.state_of("1.1") == "work"
    assert spool.read_result("1.1") == {"sop_instance_uid": "1.1", "delivered": {}, "resent": 1}
    assert not spool.reopen_for_resend("9.9")
    assert spool.resend_requests() == [] and spool.state_of("1.2") == "done"
    assert spool.counts().undelivered == 1


def test_resend_after_a_crash_between_its_steps_still_delivers(tmp_path: Path) -> None:
    spool = _scored_spool(tmp_path / "spool", ["1.1"])
    spool.request_resend("1.1")
    spool.path("done", "1.1").replace(spool.path("work", "1.1"))  # moved, then the node died
    assert spool.reopen_for_resend("1.1") and spool.state_of("1.1") == "work"


def test_resend_command_queues_requests_and_explains_what_it_cannot(tmp_path: Path) -> None:
    spool = _scored_spool(tmp_path / "spool", ["1.1", "1.2", "1.3"])
    old = time.time() - 10 * 86400
    os.utime(spool.path("done", "1.1"), (old, old))
    spool.put("1.4", b"waiting")
    spool.put("1.5", b"blank")
    spool.next_incoming(), spool.next_incoming()
    spool.fail("1.5", "blank image")
    root = str(tmp_path / "spool")
    done = run_cli("svdh-run", "resend", "1.2", "--spool", root)
    assert done.returncode == 0 and "1 instance(s) queued" in done.stderr and "not running" in done.stderr
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    done = run_cli("svdh-run", "resend", "--all-since", since, "--spool", root)
    assert done.returncode == 0 and "2 instance(s) queued" in done.stderr
    assert spool.resend_requests() == ["1.2", "1.3"], "the one received ten days ago is not included"
    done = run_cli("svdh-run", "resend", "1.4", "--spool", root)
    assert done.returncode == 0 and "still in the queue" in done.stderr
    failed = run_cli("svdh-run", "resend", "1.5", "--spool", root)
    assert failed.returncode == 2 and "not scored (blank image)" in failed.stderr
    unknown = run_cli("svdh-run", "resend", "7.7", "--spool", root)
    assert unknown.returncode == 2 and "has not received that instance" in unknown.stderr
    for bad in (["--all-since", "last tuesday"], [], ["1.2", "--all-since", "2026-01-01"]):
        refused = run_cli("svdh-run", "resend", *bad, "--spool", root)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, bad
    elsewhere = run_cli("svdh-run", "resend", "1.2", "--spool", str(tmp_path / "nothing"))
    assert elsewhere.returncode == 2 and "not the spool of a node" in elsewhere.stderr


@pytest.mark.parametrize(
    ("rule", "calling", "address", "allowed"),
    [
        ("XRAY1", "XRAY1", "10.0.0.5", True),
        ("XRAY1", "XRAY2", "10.0.0.5", False),
        ("XRAY1@10.0.0.5", "XRAY1", "10.0.0.5", True),
        ("XRAY1@10.0.0.5", "XRAY1", "10.0.0.6", False),
        ("XRAY1@10.0.0.0/24", "XRAY1", "10.0.0.200", True),
        ("XRAY1@10.0.0.0/24", "XRAY1", "10.0.1.1", False),
        ("*@10.0.0.5", "ANYONE", "10.0.0.5", True),
        ("*@10.0.0.5", "ANYONE", "10.0.0.6", False),
        ("XRAY1@10.0.0.5", "XRAY1", "::ffff:10.0.0.5", True),  # an IPv4 peer on a dual-stack socket
        ("XRAY1@fd00::/64", "XRAY1", "fd00::7", True),
        ("XRAY1@localhost", "XRAY1", "127.0.0.1", True),  # a name, resolved when the node starts
    ],
)
def test_allow_rules_match_ae_titles_and_hosts(rule: str, calling: str, address: str, allowed: bool) -> None:
    from svdh_runtime.pacs.access import AllowRule

    resolve = {"localhost": ["127.0.0.1", "::1"]}.get
    assert AllowRule.parse(rule, resolve=resolve).matches(calling, address) is allowed


def test_access_policy_checks_the_called_ae_title_and_says_why() -> None:
    from svdh_runtime.pacs.access import CALLED_AE_NOT_RECOGNISED, CALLING_AE_NOT_RECOGNISED, AccessPolicy, AllowRule

    policy = AccessPolicy("SVDH", [AllowRule.parse("XRAY1@10.0.0.5")])
    assert policy.check("XRAY1", "SVDH", "10.0.0.5") is None
    assert policy.check("XRAY1", "SVDH  ", "10.0.0.5") is None, "AE titles are padded with spaces"
    assert policy.check("XRAY1", "OTHER", "10.0.0.5").diagnostic == CALLED_AE_NOT_RECOGNISED
    stranger = policy.check("XRAY9", "SVDH", "10.0.0.5")
    assert stranger.diagnostic == CALLING_AE_NOT_RECOGNISED and stranger.reason == "calling AE title not recognised"
    assert policy.check("XRAY1", "SVDH", "10.0.0.9").reason.endswith("from this address")
    assert AccessPolicy("SVDH").check("ANYONE", "SVDH", "192.0.2.1") is None, "no rules: anyone"


@pytest.mark.parametrize("rule", ["", "*", "TOO-LONG-AE-TITLE-X", "BACK\\SLASH", "XRAY1@", "XRAY1@not a host"])
def test_bad_allow_rules_are_refused_in_one_line(rule: str) -> None:
    from svdh_runtime.errors import InputError
    from svdh_runtime.pacs.access import AllowRule

    def resolve(host: str) -> list[str]:
        raise InputError(f"--allow: host {host!r} cannot be resolved")

    with pytest.raises(InputError) as caught:
        AllowRule.parse(rule, resolve=resolve)
    assert "\n" not in str(caught.value)


def test_allow_file_reads_rules_and_names_the_bad_line(tmp_path: Path) -> None:
    from svdh_runtime.errors import InputError
    from svdh_runtime.pacs.access import read_allow_file

    good = tmp_path / "allowed.txt"
    good.write_text("# hand clinic\nXRAY1@10.0.0.5\n\n  XRAY2   # room 2\n")
    assert read_allow_file(good) == ["XRAY1@10.0.0.5", "XRAY2"]
    bad = tmp_path / "bad.txt"
    bad.write_text("XRAY1\nXRAY2 XRAY3\n")
    with pytest.raises(InputError, match="line 2"):
        read_allow_file(bad)
    with pytest.raises(InputError, match="cannot be read"):
        read_allow_file(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--tls-cert", "cert.pem"], "needs both --tls-cert and --tls-key"),
        (["--tls-cert", "cert.pem", "--tls-key", "missing.key"], "--tls-key missing.key: no such file"),
        (["--tls-cert", "cert.pem", "--tls-key", "cert.pem"], "cannot be loaded"),
        (["--forward-tls"], "--forward-tls"),
        (["--allow", "*"], "needs a host"),
        (["--ae-title", "A" * 17], "is not an AE title"),
    ],
)
def test_serve_refuses_bad_access_options_in_one_line(tmp_path: Path, options: list[str], expected: str) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    done = run_cli("svdh-run", "serve", "--spool", str(tmp_path / "spool"), *options, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) <= 6  # click's usage box at most


def test_status_of_a_spool_no_node_has_used_is_down(tmp_path: Path) -> None:
    done = run_cli("svdh-run", "status", "--spool", str(tmp_path / "never"))
    assert done.returncode == 4 and json.loads(done.stdout)["state"] == "down"
    assert "no node has run with the spool" in done.stderr


def test_many_senders_of_one_image_queue_it_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    spool = Spool(tmp_path / "spool")
    with ThreadPoolExecutor(max_workers=8) as senders:
        fresh = list(senders.map(lambda _: spool.put("1.2.3", b"image" * 10000), range(8)))
    assert sorted(fresh) == [False] * 7 + [True], "one queues it, the others are told it is a duplicate"
    assert spool.counts().incoming == 1 and not list((tmp_path / "spool").rglob("*.partial"))


def test_a_failed_write_leaves_no_partial_file_and_a_starting_node_tidies_old_ones(tmp_path: Path) -> None:
    from svdh_runtime.files import atomic_target

    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError), atomic_target(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool" / "incoming" / "1.2.3.dcm.abc.partial").write_bytes(b"x" * 100)  # a killed node's
    assert Spool(tmp_path / "spool").partials_removed == 0, "only a starting node tidies"
    assert Spool(tmp_path / "spool", tidy=True).partials_removed == 1 and spool.counts().incoming == 0
