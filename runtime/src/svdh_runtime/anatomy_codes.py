"""Finding-site codes of the SvdH joints for DICOM SR, with laterality.

SNOMED CT codes (scheme ``SCT``) are used only where DICOM's code tables (PS3.16,
as pydicom ships them) have the structure; a finger joint has one generic code,
and the tracking identifier of each group names the exact area. The thumb's
joints, the carpal bones and joints DICOM has no code for use svdh's private
scheme ``99SVDH``.
"""

from __future__ import annotations

PRIVATE = "99SVDH"

# site -> (code value, coding scheme, code meaning)
SITE_CODES: dict[str, tuple[str, str, str]] = {
    **{f"pip{d}": ("125682004", "SCT", "Finger Joint") for d in (2, 3, 4, 5)},
    **{f"mcp{d}": ("125682004", "SCT", "Finger Joint") for d in (2, 3, 4, 5)},
    "ip1": ("SVDH-J-IP1", PRIVATE, "Interphalangeal joint of thumb"),
    "mcp1": ("SVDH-J-MCP1", PRIVATE, "Metacarpophalangeal joint of thumb"),
    "mc1base": ("36455000", "SCT", "Metacarpal"),  # the base of the first metacarpal
    "multangular": ("SVDH-B-TRAPEZIUM", PRIVATE, "Trapezium (greater multangular)"),
    "navicular": ("30518006", "SCT", "Scaphoid"),
    "lunate": ("SVDH-B-LUNATE", PRIVATE, "Lunate"),
    "radius": ("75129005", "SCT", "Distal Radius"),
    "ulna": ("91238003", "SCT", "Distal Ulna"),
    **{f"cmc{d}": (f"SVDH-J-CMC{d}", PRIVATE, f"Carpometacarpal joint of digit {d}") for d in (3, 4, 5)},
    "mna": ("SVDH-J-STT", PRIVATE, "Scaphotrapezial joint (multangular-navicular)"),
    "capnlun": ("SVDH-J-CNL", PRIVATE, "Capitate-navicular-lunate joints"),
    "radcar": ("74670003", "SCT", "Wrist joint"),  # the radiocarpal joint
}

LATERALITY_CODES: dict[str, tuple[str, str, str]] = {
    "LH": ("7771000", "SCT", "Left"),
    "RH": ("24028007", "SCT", "Right"),
}


def finding_site(hd: object, joint: str, hand: str) -> object:
    """highdicom's FindingSite of a joint of the patient's left (``LH``) or right (``RH``) hand."""
    return hd.sr.FindingSite(
        anatomic_location=hd.sr.CodedConcept(*SITE_CODES[joint]),
        laterality=hd.sr.CodedConcept(*LATERALITY_CODES[hand]),
    )
