"""A parametric PA hand skeleton with lesions placed at the SvdH areas.

Coordinates are millimetres in a canonical hand frame: x grows toward the
radial (thumb) side, y toward the fingertips, the distal radius tip at y = 0.
:func:`build_hand` places joint space narrowing (narrower or lost joint
space) and erosions (bites out of the cortex that grow with the grade) from a
dict of grades, then :class:`Pose` moves the hand into the image.

A :class:`Morphology` (version-2 phantoms, :mod:`.morphology`) makes the hand a
person's: its size and proportions, bone density and cortical thickness,
erosions of varied shape, ulnar deviation, flexed or overlapping fingers, a
rotated thumb, sesamoids, and what is not scored (osteoarthritis at the DIP
joints, an old fracture, surgical hardware). The default draws the canonical
hand of version 1, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .shapes import Bite, Bone, Ellipsoid, Tube

if TYPE_CHECKING:
    from .morphology import Morphology, Realism
    from .streams import Streams

# Joint space left at each narrowing grade (fraction of normal; < 0: bones fused).
NARROWING_FRACTION = (1.0, 0.62, 0.32, 0.08, -0.25)
FINGER_GAP_MM = {"mcp": 2.0, "pip": 1.6, "dip": 1.1, "ip": 1.4}
CARPAL_GAP_MM = 1.8
SOFT_DENSITY = 0.045

# Fingers 2-5: metacarpal base (mm), metacarpal angle (deg, + radial), lengths (mc, p1, p2, p3), radii.
_FINGERS = {
    2: ((8.0, 28.5), 7.0, (64.0, 39.0, 23.0, 17.0), 4.0),
    3: ((-0.5, 31.5), 0.0, (62.0, 43.0, 27.0, 19.0), 4.2),
    4: ((-9.0, 30.0), -6.5, (56.0, 40.0, 25.0, 18.0), 3.8),
    5: ((-16.0, 28.0), -13.0, (51.0, 32.0, 18.0, 16.0), 3.4),
}
_THUMB = ((19.0, 26.0), 30.0, (44.0, 31.0, 24.0), 4.4)
# Carpal bones: centre, semi-axes, angle (deg).
_CARPALS = {
    "navicular": ((9.0, 8.0), (8.5, 5.0), 40.0),
    "lunate": ((-1.5, 7.5), (5.5, 5.3), 0.0),
    "triquetrum": ((-10.0, 9.0), (5.0, 4.5), -20.0),
    "pisiform": ((-12.5, 11.0), (3.8, 3.8), 0.0),
    "multangular": ((16.0, 19.5), (6.0, 5.5), 20.0),
    "trapezoid": ((8.0, 22.0), (4.5, 5.0), 0.0),
    "capitate": ((-0.5, 21.5), (5.5, 8.5), 0.0),
    "hamate": ((-9.5, 21.0), (6.0, 7.5), -10.0),
}


def _unit(degrees: float) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.array([np.sin(rad), np.cos(rad)])


@dataclass
class JointSite:
    """Where an SvdH area lies (for heatmap checks), in mm."""

    centre: np.ndarray
    radius: float


@dataclass
class Hand:
    """All shapes of one hand plus the centre of each scored joint."""

    bones: list = field(default_factory=list)  # Bone | Ellipsoid
    soft: list = field(default_factory=list)  # Tube
    bites: list = field(default_factory=list)  # Bite
    extras: list = field(default_factory=list)  # ring and other dense objects (Tube)
    sites: dict[str, JointSite] = field(default_factory=dict)
    proximal_phalanges: dict[int, Bone] = field(default_factory=dict)  # canonical frame only
    long_bones: dict[str, Bone] = field(default_factory=dict)  # radius, ulna, mc1..5 (canonical frame only)
    features: list[str] = field(default_factory=list)  # what was drawn beyond the scored lesions (version 2)

    def transformed(self, pose: Pose) -> Hand:
        return Hand(
            bones=[pose.apply(s) for s in self.bones],
            soft=[pose.apply(s) for s in self.soft],
            bites=[pose.apply(s) for s in self.bites],
            extras=[pose.apply(s) for s in self.extras],
            sites={k: JointSite(pose.point(v.centre), v.radius * pose.scale) for k, v in self.sites.items()},
            features=list(self.features),
        )


@dataclass(frozen=True)
class Pose:
    """Similarity transform from the canonical hand frame to image millimetres (y down)."""

    offset: tuple[float, float]
    rotation_deg: float = 0.0
    scale: float = 1.0
    mirror: bool = False  # True for a hand whose thumb points to image left... in canonical terms, -x

    def point(self, p: np.ndarray) -> np.ndarray:
        x, y = (-p[0] if self.mirror else p[0]), p[1]
        a = np.deg2rad(self.rotation_deg)
        xr, yr = x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)
        return np.array([self.offset[0] + self.scale * xr, self.offset[1] - self.scale * yr])

    def apply(self, shape):  # noqa: ANN001, ANN201 - one of the shapes
        s = self.scale
        if isinstance(shape, Bone):
            return Bone(
                self.point(shape.start),
                self.point(shape.end),
                shape.shaft_radius * s,
                shape.start_radius * s,
                shape.end_radius * s,
                shape.flare * s,
                shape.cap_flatness,
                shape.cortex_density,
                shape.marrow_density,
            )
        if isinstance(shape, Ellipsoid):
            angle = -shape.angle if self.mirror else shape.angle
            # image y points down, so a counter-clockwise canonical angle becomes clockwise
            new_angle = -(angle + np.deg2rad(self.rotation_deg))
            return Ellipsoid(
                self.point(shape.centre),
                (shape.axes[0] * s, shape.axes[1] * s),
                new_angle,
                shape.cortex_density,
                shape.marrow_density,
            )
        if isinstance(shape, Tube):
            return Tube(self.point(shape.start), self.point(shape.end), shape.radius * s, shape.density)
        if isinstance(shape, Bite):
            return Bite(self.point(shape.centre), shape.radius * s, shape.depth)
        raise TypeError(type(shape))


def _erode_bone_end(
    hand: Hand, bone: Bone, at_end: bool, grade: int, rng: np.random.Generator, varied: Realism | None = None
) -> None:
    """Bites out of the cortex near one end of a long bone; more and larger with the grade (``varied``: of the
    shapes real erosions take, :func:`.morphology.varied_erosion`)."""
    if grade <= 0:
        return
    if varied is not None:
        from .morphology import varied_erosion

        hand.bites += varied_erosion(bone, at_end, grade, rng, varied)
        return
    u = bone.axis
    normal = np.array([-u[1], u[0]])
    tip = bone.end if at_end else bone.start
    inward = -u if at_end else u
    radius_end = bone.end_radius if at_end else bone.start_radius
    for _ in range(min(grade, 4)):
        side = rng.choice((-1.0, 1.0))
        back = rng.uniform(1.0, 2.5 + 0.5 * grade)
        centre = tip + inward * back + normal * side * radius_end * rng.uniform(0.75, 1.0)
        hand.bites.append(Bite(centre, radius_end * (0.28 + 0.09 * grade) * rng.uniform(0.85, 1.15), depth=0.95))
    if grade >= 5:  # collapse of the joint surface
        hand.bites.append(Bite(tip + inward * radius_end * 0.3, radius_end * 0.95, depth=0.8))


def _erode_carpal(hand: Hand, bone: Ellipsoid, grade: int, rng: np.random.Generator) -> None:
    if grade <= 0:
        return
    size = min(bone.axes)
    for _ in range(min(grade, 4)):
        theta = rng.uniform(0.0, 2.0 * np.pi)
        hand.bites.append(Bite(bone.boundary_point(theta, 0.85), size * (0.3 + 0.1 * grade), depth=0.95))
    if grade >= 5:
        hand.bites.append(Bite(bone.centre.copy(), size * 0.9, depth=0.7))


def _gap(kind: str, grade: int) -> float:
    return FINGER_GAP_MM[kind] * NARROWING_FRACTION[grade]


def build_hand(
    erosion: dict[str, int],
    narrowing: dict[str, int],
    rng: np.random.Generator,
    morph: Morphology | None = None,
    streams: Streams | None = None,
) -> Hand:
    """A hand (thumb toward +x) with the given grades per joint name; canonical unless ``morph`` says how
    this person's hand departs from it. ``streams`` (default: everything from ``rng``, in order) gives each
    part its own stream: the same person with other grades (:mod:`.streams`).

    Joint names: ``ip1``, ``pip2..5``, ``mcp1..5``, ``mc1base``, ``multangular``,
    ``navicular``, ``lunate``, ``radius``, ``ulna`` (erosion) and ``pip2..5``,
    ``mcp1..5``, ``cmc3..5``, ``mna``, ``capnlun``, ``radcar`` (narrowing).
    """
    if morph is None:
        from .morphology import CANONICAL as morph
    if streams is None:
        from .streams import Streams

        streams = Streams.shared(rng)
    varied = morph.realism if morph.varied_erosions else None
    sx, sy = morph.width, morph.length  # the canonical frame stretched to this hand
    hand = Hand()
    shrink = {
        name: CARPAL_GAP_MM * (1.0 - NARROWING_FRACTION[narrowing.get(name, 0)])
        for name in ("cmc3", "cmc4", "cmc5", "mna", "capnlun", "radcar")
    }
    spread_rng = streams("spread")
    spread = {d: spread_rng.normal(0.0, 4.0) for d in (1, 2, 3, 4, 5)}

    # Forearm: radius (radial side) and ulna; narrowing of the radiocarpal joint raises the radius.
    radius = Bone(
        np.array([5.5 * sx, -90.0 * sy]),
        np.array([5.0 * sx, 0.0 + shrink["radcar"]]),
        6.0 * sx,
        6.0 * sx,
        11.0 * sx,
        flare=9.0,
        cap_flatness=3.0,
    )
    ulna = Bone(
        np.array([-15.5 * sx, -90.0 * sy]), np.array([-14.5 * sx, -3.5]), 4.8 * sx, 4.8 * sx, 6.5 * sx, 6.0, 2.2
    )
    hand.bones += [radius, ulna]
    hand.sites["radcar"] = JointSite(np.array([3.0 * sx, 1.5 + shrink["radcar"] / 2]), 9.0 * sx)
    hand.sites["radius"] = JointSite(np.array([9.0 * sx, -2.5]), 8.0 * sx)
    hand.sites["ulna"] = JointSite(np.array([-14.5 * sx, -5.0]), 6.5 * sx)
    _erode_bone_end(hand, radius, True, erosion.get("radius", 0), streams("erosion:radius"), varied)
    _erode_bone_end(hand, ulna, True, erosion.get("ulna", 0), streams("erosion:ulna"), varied)

    carpals = {}
    for name, (centre, axes, angle) in _CARPALS.items():
        c = np.array(centre, dtype=float) * (sx, sy)
        axes = (axes[0] * morph.carpal_size, axes[1] * morph.carpal_size)
        if name == "capitate":
            c[1] -= shrink["capnlun"]
        if name == "multangular":
            towards = np.array(_CARPALS["navicular"][0]) * (sx, sy) - c
            c += towards / np.linalg.norm(towards) * shrink["mna"]
        carpals[name] = Ellipsoid(c, axes, np.deg2rad(angle))
    hand.bones += list(carpals.values())
    for name in ("multangular", "navicular", "lunate"):
        hand.sites[name] = JointSite(carpals[name].centre.copy(), max(carpals[name].axes) + 1.5)
        _erode_carpal(
            hand, carpals[name], erosion.get(name, 0), streams(f"erosion:{name}")
        )  # carpal bites keep one shape
    nav, lun, cap, mul = carpals["navicular"], carpals["lunate"], carpals["capitate"], carpals["multangular"]
    hand.sites["mna"] = JointSite((mul.centre + nav.centre) / 2, 6.5)
    hand.sites["capnlun"] = JointSite((cap.centre + (nav.centre + lun.centre) / 2) / 2, 7.0)

    # Fingers 2-5.
    for digit, (base, angle, lengths, r) in _FINGERS.items():
        base_pt = np.array(base) * (sx, sy)
        lengths = tuple(length * sy * morph.digit_length[digit - 1] for length in lengths)
        r = r * sx
        if digit >= 3:
            base_pt = base_pt - np.array([0.0, shrink[f"cmc{digit}"]])
            hand.sites[f"cmc{digit}"] = JointSite(base_pt - np.array([0.0, 1.5]), 6.0)
        deviation = morph.finger_angle(digit)  # ulnar deviation, fingers crossing
        mc_dir, ph_dir = _unit(angle), _unit(angle + spread[digit] + deviation)
        # a flexed finger is foreshortened in a PA view: the middle and distal phalanges look shorter
        bend = morph.flexion_factor(digit)
        mc = Bone(base_pt, base_pt + mc_dir * lengths[0], r, r * 1.45, r * 1.35, flare=7.0)
        g_mcp = _gap("mcp", narrowing.get(f"mcp{digit}", 0))
        p1_start = mc.end + ph_dir * g_mcp + morph.subluxation(f"mcp{digit}", mc_dir, r)
        p1 = Bone(p1_start, p1_start + ph_dir * lengths[1], r * 0.85, r * 1.3, r * 1.05, flare=5.0)
        g_pip = _gap("pip", narrowing.get(f"pip{digit}", 0))
        p2_start = p1.end + ph_dir * g_pip
        p2 = Bone(p2_start, p2_start + ph_dir * lengths[2] * bend, r * 0.72, r * 1.05, r * 0.85, flare=4.0)
        p3_start = p2.end + ph_dir * FINGER_GAP_MM["dip"] * morph.dip_space(digit)
        p3 = Bone(p3_start, p3_start + ph_dir * lengths[3] * bend, r * 0.55, r * 0.85, r * 0.6, flare=3.0)
        hand.bones += [mc, p1, p2, p3]
        hand.proximal_phalanges[digit] = p1
        hand.long_bones[f"mc{digit}"] = mc
        hand.sites[f"mcp{digit}"] = JointSite(mc.end + ph_dir * g_mcp / 2, r * 1.6 + 2.0)
        hand.sites[f"pip{digit}"] = JointSite(p1.end + ph_dir * g_pip / 2, r * 1.3 + 2.0)
        hand.sites[f"dip{digit}"] = JointSite(p2.end + ph_dir * FINGER_GAP_MM["dip"] * morph.dip_space(digit) / 2, r)
        mcp_grade, pip_grade = erosion.get(f"mcp{digit}", 0), erosion.get(f"pip{digit}", 0)
        _erode_bone_end(hand, mc, True, (mcp_grade + 1) // 2, streams(f"erosion:mc{digit}:head"), varied)
        _erode_bone_end(hand, p1, False, mcp_grade // 2, streams(f"erosion:p1_{digit}:base"), varied)
        _erode_bone_end(hand, p1, True, (pip_grade + 1) // 2, streams(f"erosion:p1_{digit}:head"), varied)
        _erode_bone_end(hand, p2, False, pip_grade // 2, streams(f"erosion:p2_{digit}:base"), varied)
        hand.soft += [Tube(mc.end, p3.end, r + 4.5, SOFT_DENSITY)]

    # Thumb: metacarpal, proximal and distal phalanx.
    base, angle, lengths, r = _THUMB
    lengths = tuple(length * sy * morph.digit_length[0] for length in lengths)
    r = r * sx * morph.thumb_width  # a thumb rotated out of the PA plane looks narrower
    angle = angle + morph.thumb_angle
    base_pt, mc_dir, ph_dir = np.array(base) * (sx, sy), _unit(angle), _unit(angle - 8.0 + spread[1])
    mc1 = Bone(base_pt, base_pt + mc_dir * lengths[0], r * 0.95, r * 1.5, r * 1.3, flare=6.0)
    g_mcp1 = _gap("mcp", narrowing.get("mcp1", 0))
    p1_start = mc1.end + ph_dir * g_mcp1
    t1 = Bone(p1_start, p1_start + ph_dir * lengths[1], r * 0.85, r * 1.25, r * 1.05, flare=5.0)
    t2_start = t1.end + ph_dir * FINGER_GAP_MM["ip"]
    t2 = Bone(t2_start, t2_start + ph_dir * lengths[2], r * 0.62, r * 0.95, r * 0.7, flare=3.5)
    hand.bones += [mc1, t1, t2]
    hand.sites["mcp1"] = JointSite(mc1.end + ph_dir * g_mcp1 / 2, r * 1.6 + 2.0)
    hand.sites["ip1"] = JointSite(t1.end + ph_dir * FINGER_GAP_MM["ip"] / 2, r * 1.3 + 2.0)
    hand.sites["mc1base"] = JointSite(base_pt + mc_dir * 3.0, 7.0)
    mcp1_grade, ip1_grade = erosion.get("mcp1", 0), erosion.get("ip1", 0)
    _erode_bone_end(hand, mc1, True, (mcp1_grade + 1) // 2, streams("erosion:mc1:head"), varied)
    _erode_bone_end(hand, t1, False, mcp1_grade // 2, streams("erosion:p1_1:base"), varied)
    _erode_bone_end(hand, t1, True, (ip1_grade + 1) // 2, streams("erosion:p1_1:head"), varied)
    _erode_bone_end(hand, t2, False, ip1_grade // 2, streams("erosion:p2_1:base"), varied)
    _erode_bone_end(hand, mc1, False, erosion.get("mc1base", 0), streams("erosion:mc1:base"), varied)
    hand.long_bones.update(radius=radius, ulna=ulna, mc1=mc1)
    hand.soft += [Tube(mc1.start + mc_dir * 10.0, t2.end, r + 5.0, SOFT_DENSITY)]

    # Palm, wrist and forearm soft tissue.
    for base, angle, lengths, _ in _FINGERS.values():
        start = np.array(base) * (sx, sy)
        hand.soft.append(Tube(start, start + _unit(angle) * (lengths[0] * sy - 4.0), 9.5 * sx, SOFT_DENSITY))
    hand.soft += [
        Tube(np.array([-2.0 * sx, -95.0 * sy]), np.array([-3.0 * sx, 20.0 * sy]), 26.0 * sx, SOFT_DENSITY * 0.9),
        Tube(np.array([-5.0 * sx, 20.0 * sy]), np.array([12.0 * sx, 28.0 * sy]), 22.0 * sx, SOFT_DENSITY),
    ]
    morph.finish(hand, erosion, narrowing, streams)  # density, sesamoids, swelling, confounders (version 2)
    return hand


def add_ring(hand: Hand, digit: int, rng: np.random.Generator) -> None:
    """A metal ring on the proximal phalanx of ``digit``: a dense band across the finger."""
    phalanx = hand.proximal_phalanges[digit]
    direction = phalanx.axis
    centre = phalanx.start + direction * phalanx.length * rng.uniform(0.3, 0.5)
    normal = np.array([-direction[1], direction[0]])
    half = phalanx.shaft_radius + 5.5
    hand.extras.append(Tube(centre - normal * half, centre + normal * half, 1.2, 2.5))
