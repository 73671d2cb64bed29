"""Who may talk to the node, tested against dcmtk: calling AE titles and hosts, the called AE title, DICOM TLS.

Certificates are made by the test with ``openssl`` (a CA, the node's, a modality's, and a stranger's from
another CA). dcmtk's ``storescu +tls`` is the sender; its ``storescp +tls`` receives results over TLS.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from pacs_peers import ECHOSCU, Node, Receiver, needs_dcmtk, wait_for

pytestmark = [
    needs_dcmtk,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make test certificates"),
]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _authority(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")  # fmt: skip
    return key, cert


def _signed(folder: Path, name: str, authority: tuple[Path, Path]) -> tuple[Path, Path]:
    key, request, cert, extensions = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem", "ext"))
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(authority[1]), "-CAkey", str(authority[0]),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions))  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("pki")
    site = _authority(folder, "site-ca")
    other = _authority(folder, "other-ca")
    return {
        "ca": site,
        "node": _signed(folder, "node", site),
        "modality": _signed(folder, "modality", site),
        "pacs": _signed(folder, "pacs", site),
        "stranger": _signed(folder, "stranger", other),
    }


@pytest.fixture()
def batch(phantoms: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "send"
    folder.mkdir()
    for image in sorted((phantoms / "images").glob("*.dcm"))[:2]:
        shutil.copy(image, folder / image.name)
    return folder


@pytest.fixture()
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    peer = Receiver(tmp_path / "received")
    yield peer
    peer.stop()


def _sop_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.glob("*.dcm")}


def test_only_allowed_callers_get_in(batch: Path, receiver: Receiver, tmp_path: Path) -> None:
    allow_file = tmp_path / "allowed.txt"
    allow_file.write_text("# modalities of the hand clinic\nXRAY2@127.0.0.0/8  # the second room\n")
    node = Node(tmp_path / "spool", receiver, None, "--allow", "XRAY1@127.0.0.1", "--allow", "FAR@10.9.8.7",
                "--allow-file", str(allow_file))  # fmt: skip
    try:
        start = node.log.read_text()
        assert "calling AE titles allowed: XRAY1@127.0.0.1, FAR@10.9.8.7, XRAY2@127.0.0.0/8" in start
        assert "0.0.0.0:" in start and "(all interfaces)" in start and f"spool {tmp_path / 'spool'}" in start
        allowed = node.send(batch, "-aet", "XRAY1")
        assert allowed.returncode == 0, allowed.stderr
        wait_for(lambda: len(receiver.files()) == 4, 120, "the SR and SC of both images")
        assert node.send(batch, "-aet", "XRAY2").returncode == 0, "rules from --allow-file count"

        unknown = node.send(batch, "-aet", "INTRUDER")
        assert unknown.returncode != 0 and "Calling AE Title Not Recognized" in unknown.stderr, unknown.stderr
        elsewhere = node.send(batch, "-aet", "FAR")  # a known AE title, from the wrong host
        assert elsewhere.returncode != 0 and "Calling AE Title Not Recognized" in elsewhere.stderr
        wrong_called = node.send(batch, "-aet", "XRAY1", called="NOTSVDH")
        assert wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stderr
        echo = subprocess.run([ECHOSCU, "-aet", "INTRUDER", "-aec", "SVDH", "127.0.0.1", str(node.port)],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert echo.returncode != 0, "C-ECHO is refused to strangers too"
    finally:
        node.stop()
    log = node.log.read_text()
    assert "rejected association from 'INTRUDER' at 127.0.0.1: calling AE title not recognised" in log
    assert "rejected association from 'FAR' at 127.0.0.1: calling AE title not recognised from this address" in log
    assert "called AE title 'NOTSVDH' is not 'SVDH'" in log
    assert len(receiver.files()) == 4 and len(list((tmp_path / "spool" / "done").glob("*.dcm"))) == 2
    sent = [pydicom.dcmread(p, stop_before_pixels=True) for p in batch.glob("*.dcm")]
    assert all(str(ds.PatientID) not in log and str(ds.PatientName) not in log for ds in sent), "no patient data"


def test_tls_node_takes_only_peers_with_the_sites_certificates(
    batch: Path, certificates: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    ca = str(certificates["ca"][1])
    pacs_key, pacs_cert = certificates["pacs"]
    receiver = Receiver(tmp_path / "received", None, "+tls", str(pacs_key), str(pacs_cert), "+cf", ca)
    node_key, node_cert = certificates["node"]
    node = Node(tmp_path / "spool", receiver, None, "--tls-cert", str(node_cert), "--tls-key", str(node_key),
                "--tls-ca", ca, "--forward-tls", "--allow", "XRAY1")  # fmt: skip
    try:
        assert "DICOM TLS, peer certificates verified" in node.log.read_text()
        key, cert = certificates["modality"]
        trusted = node.send(batch, "-aet", "XRAY1", "+tls", str(key), str(cert), "+cf", ca)
        assert trusted.returncode == 0, trusted.stderr
        wait_for(lambda: len(receiver.files()) == 4, 120, "the results, sent back over TLS")
        received = [pydicom.dcmread(p) for p in receiver.files()]
        assert {str(ds.SOPClassUID) for ds in received} == {
            "1.2.840.10008.5.1.4.1.1.88.34",
            "1.2.840.10008.5.1.4.1.1.7",
        }

        key, cert = certificates["stranger"]  # signed by another CA
        stranger = node.send(batch, "-aet", "XRAY1", "+tls", str(key), str(cert), "+cf", ca)
        assert stranger.returncode != 0, stranger.stderr
        plain = node.send(batch, "-aet", "XRAY1")  # no TLS at all
        assert plain.returncode != 0
        wait_for(lambda: "TLS handshake failed" in node.log.read_text(), 10, "the refusal to be logged")
    finally:
        node.stop()
        receiver.stop()
    assert len(receiver.files()) == 4, "nothing from the refused peers"
    assert set(_sop_uids(batch)) == {p.stem for p in (tmp_path / "spool" / "done").glob("*.dcm")}
